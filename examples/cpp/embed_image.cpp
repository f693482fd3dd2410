// Embed one 8-bit RGB image with a slimkern AOTInductor export, in C++ without Python.
//
//   slimkern export vit_tiny_eurosat --weights slimkern/data/weights/vit_tiny_eurosat.safetensors \
//       --width 0.25 --format aoti --out tiny.pt2
//   bash examples/cpp/build.sh embed_image && ./embed_image tiny.pt2 image.ppm
//
// The image is a binary PPM (P6, 8-bit RGB) of exactly the exported image size. The package's metadata says how to
// feed it (slimkern's "mean" / "std" for 8-bit RGB / 255 input, "image_size", "inputs"); the embedding goes to stdout
// as one line of numbers, the metadata summary to stderr.
#include <torch/csrc/inductor/aoti_package/model_package_loader.h>

#include <ATen/ATen.h>

#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <vector>

namespace {

// slimkern writes lists as JSON arrays of numbers: "[0.3444, 0.3811, 0.4085]".
std::vector<double> parse_numbers(const std::string& json) {
  std::vector<double> values;
  std::string text = json;
  for (char& c : text) {
    if (c == '[' || c == ']' || c == ',') c = ' ';
  }
  std::istringstream in(text);
  double v;
  while (in >> v) values.push_back(v);
  return values;
}

const std::string& field(const std::unordered_map<std::string, std::string>& meta, const std::string& key) {
  auto it = meta.find(key);
  if (it == meta.end()) throw std::runtime_error("the package has no slimkern metadata '" + key + "'");
  return it->second;
}

// A binary PPM: "P6 <width> <height> 255" then width * height RGB triplets.
std::vector<unsigned char> read_ppm(const std::string& path, int& width, int& height) {
  std::ifstream file(path, std::ios::binary);
  std::string magic;
  int maxval = 0;
  file >> magic >> width >> height >> maxval;
  file.get();  // the single whitespace before the pixels
  if (!file || magic != "P6" || maxval != 255) throw std::runtime_error(path + " is not an 8-bit binary PPM (P6)");
  std::vector<unsigned char> pixels(static_cast<size_t>(width) * height * 3);
  file.read(reinterpret_cast<char*>(pixels.data()), static_cast<std::streamsize>(pixels.size()));
  if (!file) throw std::runtime_error(path + ": fewer pixels than its header says");
  return pixels;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::cerr << "usage: " << argv[0] << " PACKAGE.pt2 IMAGE.ppm\n";
    return 2;
  }
  try {
    torch::inductor::AOTIModelPackageLoader loader(argv[1]);
    const auto meta = loader.get_metadata();
    const std::vector<double> size = parse_numbers(field(meta, "image_size"));
    const std::vector<double> mean = parse_numbers(field(meta, "mean"));
    const std::vector<double> std_dev = parse_numbers(field(meta, "std"));
    if (field(meta, "dtype") != "float32" || mean.size() != 3) {
      throw std::runtime_error("this example feeds 8-bit RGB to a float32 export of a 3-band model");
    }
    std::cerr << field(meta, "model") << " width " << field(meta, "width") << " (" << field(meta, "plan") << "), "
              << field(meta, "flops") << " FLOPs per image, input " << field(meta, "inputs") << "\n";

    int width = 0, height = 0;
    const std::vector<unsigned char> pixels = read_ppm(argv[2], width, height);
    if (height != static_cast<int>(size[0]) || width != static_cast<int>(size[1])) {
      throw std::runtime_error("the image is " + std::to_string(height) + "x" + std::to_string(width) +
                               ", the export takes " + field(meta, "image_size"));
    }
    // [1, 3, H, W]: pixels / 255, then (x - mean) / std per band, as model.normalize does
    at::Tensor x = at::empty({1, 3, height, width}, at::kFloat);
    float* data = x.data_ptr<float>();
    for (int c = 0; c < 3; ++c) {
      for (int i = 0; i < height * width; ++i) {
        data[c * height * width + i] = static_cast<float>((pixels[3 * i + c] / 255.0 - mean[c]) / std_dev[c]);
      }
    }
    const at::Tensor embedding = loader.run({x})[0].contiguous();
    const float* out = embedding.data_ptr<float>();
    for (int64_t i = 0; i < embedding.numel(); ++i) std::printf(i ? " %.9g" : "%.9g", out[i]);
    std::printf("\n");
  } catch (const std::exception& err) {
    std::cerr << "embed_image: " << err.what() << "\n";
    return 1;
  }
  return 0;
}
