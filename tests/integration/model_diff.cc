// Compares the weights of two model files written by `pst train`: prints the
// largest difference per tensor relative to the tensor's scale and exits 1
// when some element differs by more than atol + rtol * max|b| of its tensor.
//   model_diff A.safetensors B.safetensors ATOL RTOL
#include <cmath>
#include <cstdio>
#include <cstdlib>

#include "core/safetensors.h"

using namespace pst;

int main(int argc, char** argv) {
  if (argc != 5) {
    std::fprintf(stderr, "usage: model_diff A B ATOL RTOL\n");
    return 2;
  }
  auto a = SafetensorsFile::read(argv[1]);
  auto b = SafetensorsFile::read(argv[2]);
  if (!a.ok() || !b.ok()) {
    std::fprintf(stderr, "%s\n", (!a.ok() ? a.status() : b.status()).to_string().c_str());
    return 2;
  }
  const double atol = std::atof(argv[3]), rtol = std::atof(argv[4]);
  int bad = 0, tensors = 0;
  double worst = 0;
  for (const auto& [name, t] : b->tensors()) {
    const StoredTensor* u = a->find(name);
    if (!u || u->shape != t.shape) {
      std::fprintf(stderr, "%s: missing or of another shape in %s\n", name.c_str(), argv[1]);
      return 1;
    }
    const auto x = u->to_f32(), y = t.to_f32();
    double scale = 0, diff = 0;
    for (size_t i = 0; i < y.size(); ++i) {
      scale = std::max(scale, std::abs(static_cast<double>(y[i])));
      diff = std::max(diff, std::abs(static_cast<double>(x[i]) - y[i]));
    }
    ++tensors;
    worst = std::max(worst, scale > 0 ? diff / scale : diff);
    if (!(diff <= atol + rtol * scale)) {
      if (bad++ < 5) std::fprintf(stderr, "%s: max |a - b| = %.3g (scale %.3g)\n", name.c_str(), diff, scale);
    }
  }
  std::printf("%d tensors, largest difference %.3g of the tensor's scale, %d over tolerance\n", tensors, worst, bad);
  return bad == 0 && tensors > 0 ? 0 : 1;
}
