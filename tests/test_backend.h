// The backend under test and host<->device copies for kernel tests.
//
// PST_TEST_DEVICE=cpu (the default) or cuda picks the backend that the model
// tests run on, so one test binary checks every backend against the same
// oracles. With cuda and no device present, test_backend() returns null and
// the test skips (PST_TEST_BACKEND_OR_SKIP).
#pragma once

#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "model/backend.h"

namespace pst::testing {

inline bool testing_cuda() {
  const char* d = std::getenv("PST_TEST_DEVICE");
  return d && std::strcmp(d, "cuda") == 0;
}

inline std::unique_ptr<Backend> test_backend(int threads = 2) {
  if (!testing_cuda()) return make_cpu_backend(threads);
  if (cuda_device_count() == 0) return nullptr;
  auto be = make_cuda_backend(CudaOptions{});
  return be.ok() ? std::move(*be) : nullptr;
}

#define PST_TEST_BACKEND_OR_SKIP(var)                                   \
  std::unique_ptr<::pst::Backend> var = ::pst::testing::test_backend(); \
  if (!var) GTEST_SKIP() << "PST_TEST_DEVICE=cuda but no CUDA device is present"

// Device copies of host vectors: in(v) uploads v into the buffer that
// belongs to v (allocated on first use) and returns it; back(v) downloads
// that buffer into v. A vector keeps its size while mirrored.
class Mirror {
 public:
  explicit Mirror(Backend* be) : be_(be) {}
  ~Mirror() {
    for (auto& [key, p] : buffers_) be_->deallocate(p);
  }
  Mirror(const Mirror&) = delete;
  Mirror& operator=(const Mirror&) = delete;

  template <typename T>
  T* in(const std::vector<T>& v) {
    void* p = buffer(&v, v.size() * sizeof(T));
    be_->upload(p, v.data(), v.size() * sizeof(T));
    return static_cast<T*>(p);
  }
  template <typename T>
  void back(std::vector<T>& v) {
    be_->download(v.data(), buffer(&v, v.size() * sizeof(T)), v.size() * sizeof(T));
  }

 private:
  void* buffer(const void* key, size_t bytes) {
    auto it = buffers_.find(key);
    if (it == buffers_.end()) it = buffers_.emplace(key, be_->allocate(bytes)).first;
    return it->second;
  }

  Backend* be_;
  std::map<const void*, void*> buffers_;
};

}  // namespace pst::testing
