#include "comm/message.h"

#include <capnp/schema.h>
#include <kj/exception.h>

#include <cstring>

#include <fmt/format.h>

namespace pst {
namespace {

bool carries_bytes(wire::Kind k) { return k == wire::Kind::PUSH || k == wire::Kind::PULL_REPLY; }

// The union member each kind must carry (NONE: no requirement).
wire::Header::Which needed_member(wire::Kind k) {
  switch (k) {
    case wire::Kind::REGISTER: return wire::Header::NODE;
    case wire::Kind::NODE_TABLE: return wire::Header::NODES;
    case wire::Kind::PUSH: return wire::Header::PUSH;
    case wire::Kind::PUSH_ACK:
    case wire::Kind::PULL_REPLY: return wire::Header::STEP_INFO;
    case wire::Kind::ERROR: return wire::Header::ERROR;
    case wire::Kind::MEMBERSHIP: return wire::Header::DEPARTED;
    default: return wire::Header::NONE;
  }
}

bool reject(Rejection* why, wire::ErrorCode code, std::string message) {
  why->code = code;
  why->message = std::move(message);
  return false;
}

}  // namespace

namespace {

template <typename Enum>
std::string enumerant_name(Enum value, const char* what) {
  const auto enumerants = capnp::Schema::from<Enum>().getEnumerants();
  const auto raw = static_cast<uint16_t>(value);
  if (raw < enumerants.size()) return enumerants[raw].getProto().getName().cStr();
  return fmt::format("{} {}", what, raw);
}

}  // namespace

std::string kind_name(wire::Kind kind) { return enumerant_name(kind, "kind"); }

std::string error_code_name(wire::ErrorCode code) { return enumerant_name(code, "code"); }

std::string dtype_name(wire::DType dtype) { return enumerant_name(dtype, "dtype"); }

int64_t dtype_bytes(wire::DType dtype) {
  switch (dtype) {
    case wire::DType::FLOAT32: return 4;
    case wire::DType::BFLOAT16: return 2;
  }
  return 0;
}

int64_t OutMessage::payload_bytes() const {
  int64_t bytes = 0;
  for (const Payload& p : payload_) bytes += p.values * dtype_bytes(p.dtype);
  return bytes;
}

int64_t InMessage::chunk_floats(size_t i) const {
  return static_cast<int64_t>(frames_[i + 1].size()) / dtype_bytes(chunks_[static_cast<unsigned>(i)].getDtype());
}

Status refused(wire::ErrorInfo::Reader error, const std::string& context) {
  const std::string message = context + ": " + error.getMessage().cStr();
  return error.getCode() == wire::ErrorCode::REFORM ? Status(StatusCode::kAborted, message)
                                                    : Status(StatusCode::kFailedPrecondition, message);
}

OutMessage::OutMessage(wire::Kind kind, uint64_t job_id, int32_t sender, int64_t step, uint64_t request_id)
    : header_(builder_.initRoot<wire::Header>()) {
  header_.setVersion(wire::PROTOCOL_VERSION);
  header_.setKind(kind);
  header_.setJobId(job_id);
  header_.setSender(sender);
  header_.setStep(step);
  header_.setRequestId(request_id);
  header_.setProcess(this_process());
}

void OutMessage::add_chunk(ChunkKey key, const float* data, int64_t floats, std::shared_ptr<const void> owner) {
  payload_.push_back({key, data, floats, wire::DType::FLOAT32, std::move(owner)});
}

void OutMessage::add_chunk_copy(ChunkKey key, const float* data, int64_t floats) {
  auto copy = std::make_shared<std::vector<float>>(data, data + floats);
  const float* values = copy->data();
  add_chunk(key, values, floats, std::move(copy));
}

void OutMessage::add_chunk_bf16(ChunkKey key, const uint16_t* data, int64_t values, std::shared_ptr<const void> owner) {
  payload_.push_back({key, data, values, wire::DType::BFLOAT16, std::move(owner)});
}

void OutMessage::add_key(ChunkKey key, int64_t floats) {
  payload_.push_back({key, nullptr, floats, wire::DType::FLOAT32, nullptr});
}

Frames OutMessage::finish() {
  auto refs = header_.initChunks(static_cast<unsigned>(payload_.size()));
  for (size_t i = 0; i < payload_.size(); ++i) {
    auto r = refs[static_cast<unsigned>(i)];
    r.setTensor(payload_[i].key.tensor);
    r.setChunk(payload_[i].key.chunk);
    r.setDtype(payload_[i].dtype);
    r.setBytes(static_cast<uint64_t>(payload_[i].values * dtype_bytes(payload_[i].dtype)));
  }
  Frames frames;
  const kj::Array<capnp::word> flat = capnp::messageToFlatArray(builder_);
  const kj::ArrayPtr<const kj::byte> bytes = flat.asBytes();
  frames.emplace_back(bytes.begin(), bytes.size());
  for (Payload& p : payload_) {
    if (!p.data) continue;
    // The frame points at the caller's floats; ZeroMQ calls release() once
    // it no longer needs them, which drops the owner.
    auto* keep = new std::shared_ptr<const void>(std::move(p.owner));
    auto release = [](void*, void* hint) { delete static_cast<std::shared_ptr<const void>*>(hint); };
    frames.emplace_back(const_cast<void*>(p.data), static_cast<size_t>(p.values * dtype_bytes(p.dtype)), release, keep);
  }
  payload_.clear();
  return frames;
}

std::unique_ptr<InMessage> InMessage::parse(Frames frames, Rejection* why, uint64_t word_limit) {
  std::unique_ptr<InMessage> m(new InMessage());
  m->frames_ = std::move(frames);
  if (m->frames_.empty() || m->frames_[0].size() == 0) {
    reject(why, wire::ErrorCode::BAD_HEADER, "message has no header frame");
    return nullptr;
  }
  const zmq::message_t& f0 = m->frames_[0];
  if (f0.size() % sizeof(capnp::word) != 0) {
    reject(why, wire::ErrorCode::BAD_HEADER,
           fmt::format("header frame of {} bytes is not a whole number of 8-byte words", f0.size()));
    return nullptr;
  }
  const size_t words = f0.size() / sizeof(capnp::word);
  kj::ArrayPtr<const capnp::word> view;
  if (reinterpret_cast<uintptr_t>(f0.data()) % alignof(capnp::word) == 0) {
    view = kj::arrayPtr(static_cast<const capnp::word*>(f0.data()), words);
  } else {
    // Small ZeroMQ messages live inside zmq_msg_t, not word aligned.
    m->aligned_ = kj::heapArray<capnp::word>(words);
    std::memcpy(m->aligned_.begin(), f0.data(), f0.size());
    view = kj::arrayPtr(m->aligned_.begin(), words);
  }
  capnp::ReaderOptions options;
  options.traversalLimitInWords = word_limit;
  options.nestingLimit = 16;
  KJ_IF_MAYBE (e, kj::runCatchingExceptions([&] {
                 m->reader_ = std::make_unique<capnp::FlatArrayMessageReader>(view, options);
                 m->header_ = m->reader_->getRoot<wire::Header>();
                 // Touch every field a receiver reads, so a bad pointer or the traversal
                 // limit fails here rather than in a handler.
                 m->chunks_ = m->header_.getChunks();
                 for (auto c : m->chunks_) (void)c.getBytes();
                 switch (m->header_.which()) {
                   case wire::Header::NODE: {
                     const auto node = m->header_.getNode();
                     (void)node.getEndpoint();
                     (void)node.getHost();
                     (void)node.getMetrics();
                     break;
                   }
                   case wire::Header::NODES:
                     for (auto n : m->header_.getNodes()) (void)n.getEndpoint();
                     break;
                   case wire::Header::ERROR: (void)m->header_.getError().getMessage(); break;
                   case wire::Header::PUSH: (void)m->header_.getPush().getTokens(); break;
                   case wire::Header::REPORT: (void)m->header_.getReport().getTokens(); break;
                   case wire::Header::STEP_INFO: (void)m->header_.getStepInfo().getBatch(); break;
                   case wire::Header::STATS: {
                     const auto stats = m->header_.getStats();
                     (void)stats.getContributors();
                     for (auto j : stats.getJoined()) (void)j.getProcess();
                     break;
                   }
                   case wire::Header::DEPARTED: (void)m->header_.getDeparted(); break;
                   default: break;
                 }
                 (void)m->header_.getDepartedProcesses();
               })) {
    reject(why, wire::ErrorCode::BAD_HEADER, fmt::format("undecodable header: {}", e->getDescription().cStr()));
    return nullptr;
  }
  return m;
}

ChunkKey InMessage::key(size_t i) const {
  const auto r = chunks_[static_cast<unsigned>(i)];
  return {r.getTensor(), r.getChunk()};
}

bool validate(const InMessage& m, const Expectation& e, Rejection* why) {
  const auto h = m.header();
  if (h.getVersion() != wire::PROTOCOL_VERSION)
    return reject(why, wire::ErrorCode::BAD_VERSION,
                  fmt::format("protocol version {} (this build speaks {})", h.getVersion(), wire::PROTOCOL_VERSION));
  if (h.getJobId() != e.job_id)
    return reject(why, wire::ErrorCode::BAD_JOB, fmt::format("job id {:016x} is not this job's", h.getJobId()));
  const wire::Kind kind = h.getKind();
  if (static_cast<uint16_t>(kind) > static_cast<uint16_t>(wire::Kind::MEMBERSHIP) || kind == wire::Kind::RESERVED7 ||
      kind == wire::Kind::RESERVED10 || kind == wire::Kind::RESERVED11)
    return reject(why, wire::ErrorCode::BAD_KIND, fmt::format("unknown message {}", kind_name(kind)));
  const int32_t sender = h.getSender();
  const bool unregistered_ok = kind == wire::Kind::REGISTER && sender == -1;
  if (!unregistered_ok && (sender < 0 || sender >= e.nodes))
    return reject(
        why, wire::ErrorCode::UNKNOWN_SENDER,
        fmt::format("{} from sender {}, not in the node table (ranks 0..{})", kind_name(kind), sender, e.nodes - 1));
  const wire::Header::Which need = needed_member(kind);
  if (need != wire::Header::NONE && h.which() != need)
    return reject(why, wire::ErrorCode::BAD_HEADER,
                  fmt::format("{} without its {} fields", kind_name(kind), kind_name(kind)));
  const size_t chunks = m.chunks();
  const bool bytes = carries_bytes(kind);
  const size_t frames = bytes ? chunks + 1 : 1;
  if (bytes && m.frames() < frames)
    return reject(
        why, wire::ErrorCode::TRUNCATED,
        fmt::format("{} names {} chunks but carries {} data frames", kind_name(kind), chunks, m.frames() - 1));
  if (m.frames() != frames)
    return reject(why, wire::ErrorCode::BAD_HEADER,
                  fmt::format("{} has {} frames; expected {}", kind_name(kind), m.frames(), frames));
  if (kind == wire::Kind::PULL && dtype_bytes(h.getDtype()) == 0)
    return reject(
        why, wire::ErrorCode::BAD_HEADER,
        fmt::format("pull asks for weights as {} (float32 and bfloat16 are known)", dtype_name(h.getDtype())));
  if (chunks > 0 && !e.plan)
    return reject(why, wire::ErrorCode::KEY_NOT_OWNED,
                  fmt::format("{} carries chunks; none are accepted here", kind_name(kind)));
  for (size_t i = 0; i < chunks; ++i) {
    const auto ref = m.chunk_refs()[static_cast<unsigned>(i)];
    const ChunkKey key{ref.getTensor(), ref.getChunk()};
    const Chunk* c = e.plan->find(key);
    if (!c)
      return reject(
          why, wire::ErrorCode::KEY_NOT_OWNED,
          fmt::format("{}: key ({}, {}) does not exist in the shard plan", kind_name(kind), key.tensor, key.chunk));
    if (e.owner >= 0 && c->server != e.owner)
      return reject(why, wire::ErrorCode::KEY_NOT_OWNED,
                    fmt::format("{}: key ({}, {}) belongs to server {}, not to server {}", kind_name(kind), key.tensor,
                                key.chunk, c->server, e.owner));
    const int64_t value_bytes = dtype_bytes(ref.getDtype());
    if (value_bytes == 0)
      return reject(why, wire::ErrorCode::SIZE_MISMATCH,
                    fmt::format("{}: key ({}, {}) has {} (float32 and bfloat16 are known)", kind_name(kind), key.tensor,
                                key.chunk, dtype_name(ref.getDtype())));
    const uint64_t want = static_cast<uint64_t>(c->length * value_bytes);
    if (ref.getBytes() != want)
      return reject(why, wire::ErrorCode::SIZE_MISMATCH,
                    fmt::format("{}: key ({}, {}) declares {} bytes; the chunk's {} {} values take {}", kind_name(kind),
                                key.tensor, key.chunk, ref.getBytes(), c->length, dtype_name(ref.getDtype()), want));
    if (bytes && m.frame_bytes(i + 1) != want)
      return reject(why, wire::ErrorCode::SIZE_MISMATCH,
                    fmt::format("{}: key ({}, {}) frame has {} bytes; the chunk has {}", kind_name(kind), key.tensor,
                                key.chunk, m.frame_bytes(i + 1), want));
  }
  return true;
}

Frames error_reply(const Rejection& why, uint64_t job_id, int32_t sender, const InMessage* rejected) {
  const bool known = rejected != nullptr;
  OutMessage out(wire::Kind::ERROR, job_id, sender, known ? rejected->header().getStep() : 0,
                 known ? rejected->header().getRequestId() : 0);
  auto err = out.header().initError();
  err.setCode(why.code);
  err.setMessage(why.message);
  return out.finish();
}

}  // namespace pst
