// libFuzzer target: a received multipart through InMessage::parse and
// validate() against the fuzz job's plan, as a server (owner 0) and as a
// worker (any owner), and every field a handler reads of a message that
// passes. Nothing may crash, leak or read out of bounds (ASan, UBSan).
#include <cstdint>
#include <vector>

#include "fuzz/frames.h"

namespace {

const pst::ParamTable& table() {
  static const pst::ParamTable t = pst::build_param_table(pst::fuzz::fuzz_job().model, 12, 12);
  return t;
}
const pst::ShardPlan& plan() {
  static const pst::ShardPlan p = *pst::ShardPlan::make(table().numels(), 1, pst::fuzz::kFuzzChunkBytes);
  return p;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace pst;
  for (const int32_t owner : {0, -1}) {
    Rejection why;
    auto m = InMessage::parse(fuzz::split_frames(data, size), &why);
    if (!m) continue;
    const Expectation e{fuzz::kFuzzJob, 3, &plan(), owner};
    if (!validate(*m, e, &why)) {
      (void)error_reply(why, 0, 0, m.get());
      continue;
    }
    // What handlers read of a valid message.
    const auto h = m->header();
    (void)kind_name(h.getKind());
    for (size_t i = 0; i < m->chunks(); ++i) {
      const ChunkKey k = m->key(i);
      const Chunk* c = plan().find(k);
      if (!c) __builtin_trap();  // validate() said every key exists
      if (h.getKind() == wire::Kind::PUSH || h.getKind() == wire::Kind::PULL_REPLY) {
        if (m->chunk_floats(i) != c->length) __builtin_trap();  // validate() checked the bytes
        std::vector<float> values(static_cast<size_t>(c->length));
        to_fp32(m->chunk_values(i), values.data(), c->length);  // float32 or bfloat16, as handlers read them
        float sum = 0;
        for (float v : values) sum += v;
        (void)sum;
      }
    }
  }
  return 0;
}
