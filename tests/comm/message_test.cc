// Messages: a Push round-trips with its tensor frames sent without copying
// (the frame points at the caller's floats, whose owner lives until ZeroMQ
// lets go), and every kind of bad message is rejected with its error code and
// a message that names the bad value: wrong version or job id, unknown kind
// or sender, a kind without its fields, keys that do not exist or are owned
// by another server, wrong sizes, missing or extra frames, undecodable or
// oversized headers; bfloat16 chunks and their sizes. The Error reply
// carries the code and the request id.
#include "comm/message.h"

#include <cstring>
#include <numeric>
#include <vector>

#include <gtest/gtest.h>

namespace pst {
namespace {

constexpr uint64_t kJob = 0x5eed;

class MessageTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // Three tensors of 10, 6 and 3 floats in chunks of 4 floats over 2 servers.
    auto plan = ShardPlan::make({10, 6, 3}, 2, 16);
    ASSERT_TRUE(plan.ok());
    plan_ = std::make_unique<ShardPlan>(std::move(*plan));
    data_.resize(19);
    std::iota(data_.begin(), data_.end(), 1.0f);
    for (const Chunk& c : plan_->chunks())
      if (c.server == 1) owned_by_1_.push_back(c);
    ASSERT_GE(owned_by_1_.size(), 2u);
  }

  // A push of server 1's chunks from worker rank 3.
  std::unique_ptr<OutMessage> push() {
    auto m = std::make_unique<OutMessage>(wire::Kind::PUSH, kJob, 3, 7, 42);
    auto p = m->header().initPush();
    p.setTokens(120);
    p.setLossSum(2.5);
    for (const Chunk& c : owned_by_1_) m->add_chunk(c.key, data_.data() + c.begin, c.length, nullptr);
    return m;
  }

  Expectation server1() const { return Expectation{kJob, 5, plan_.get(), 1}; }

  // Parses and validates; returns the rejection (code INTERNAL and an empty
  // message when the message was accepted).
  Rejection check(Frames frames, const Expectation& e) {
    Rejection why;
    auto in = InMessage::parse(std::move(frames), &why);
    if (!in) return why;
    if (validate(*in, e, &why)) return Rejection{};
    return why;
  }

  void expect_rejected(Frames frames, wire::ErrorCode code, const std::string& fragment) {
    const Rejection r = check(std::move(frames), server1());
    EXPECT_EQ(r.code, code) << r.message;
    EXPECT_NE(r.message.find(fragment), std::string::npos) << "'" << r.message << "' lacks '" << fragment << "'";
  }

  std::unique_ptr<ShardPlan> plan_;
  std::vector<float> data_;
  std::vector<Chunk> owned_by_1_;
};

TEST_F(MessageTest, PushRoundTripsWithoutCopyingTensorBytes) {
  auto owner = std::make_shared<std::vector<float>>(data_);
  std::weak_ptr<std::vector<float>> watch = owner;
  OutMessage m(wire::Kind::PUSH, kJob, 3, 7, 42);
  m.header().initPush().setTokens(120);
  for (const Chunk& c : owned_by_1_) m.add_chunk(c.key, owner->data() + c.begin, c.length, owner);
  const float* first = owner->data() + owned_by_1_[0].begin;
  owner.reset();
  Frames frames = m.finish();
  ASSERT_EQ(frames.size(), owned_by_1_.size() + 1);
  EXPECT_EQ(frames[1].data(), static_cast<const void*>(first)) << "tensor bytes were copied";
  EXPECT_FALSE(watch.expired()) << "the frames must keep the floats alive";

  Rejection why;
  auto in = InMessage::parse(std::move(frames), &why);
  ASSERT_TRUE(in) << why.message;
  ASSERT_TRUE(validate(*in, server1(), &why)) << why.message;
  EXPECT_EQ(in->header().getKind(), wire::Kind::PUSH);
  EXPECT_EQ(in->header().getStep(), 7);
  EXPECT_EQ(in->header().getRequestId(), 42u);
  EXPECT_EQ(in->header().getPush().getTokens(), 120);
  ASSERT_EQ(in->chunks(), owned_by_1_.size());
  for (size_t i = 0; i < in->chunks(); ++i) {
    EXPECT_EQ(in->key(i), owned_by_1_[i].key);
    ASSERT_EQ(in->chunk_floats(i), owned_by_1_[i].length);
    for (int64_t j = 0; j < owned_by_1_[i].length; ++j)
      EXPECT_EQ(in->chunk_data(i)[j], data_[static_cast<size_t>(owned_by_1_[i].begin + j)]);
  }
  in.reset();
  EXPECT_TRUE(watch.expired()) << "releasing the frames releases the owner";
}

// add_chunk_copy: the frames own copies, so the caller's buffer may change
// (or go) as soon as the chunk is added; the values are those at that time.
TEST_F(MessageTest, CopiedChunksKeepTheValuesOfTheirTime) {
  std::vector<float> buffer = data_;
  OutMessage m(wire::Kind::PUSH, kJob, 3, 7, 42);
  m.header().initPush().setTokens(120);
  for (const Chunk& c : owned_by_1_) m.add_chunk_copy(c.key, buffer.data() + c.begin, c.length);
  std::fill(buffer.begin(), buffer.end(), -1.0f);  // after the copies: must not show
  Frames frames = m.finish();
  ASSERT_EQ(frames.size(), owned_by_1_.size() + 1);
  EXPECT_NE(frames[1].data(), static_cast<const void*>(buffer.data() + owned_by_1_[0].begin));
  buffer.clear();
  buffer.shrink_to_fit();
  Rejection why;
  auto in = InMessage::parse(std::move(frames), &why);
  ASSERT_TRUE(in) << why.message;
  ASSERT_TRUE(validate(*in, server1(), &why)) << why.message;
  ASSERT_EQ(in->chunks(), owned_by_1_.size());
  for (size_t i = 0; i < in->chunks(); ++i) {
    ASSERT_EQ(in->chunk_floats(i), owned_by_1_[i].length);
    for (int64_t j = 0; j < owned_by_1_[i].length; ++j)
      EXPECT_EQ(in->chunk_data(i)[j], data_[static_cast<size_t>(owned_by_1_[i].begin + j)]);
  }
}

TEST_F(MessageTest, WrongVersionJobKindOrSender) {
  {
    auto m = push();
    m->header().setVersion(wire::PROTOCOL_VERSION + 1);
    expect_rejected(m->finish(), wire::ErrorCode::BAD_VERSION, "protocol version 2");
  }
  {
    auto m = push();
    m->header().setJobId(kJob + 1);
    expect_rejected(m->finish(), wire::ErrorCode::BAD_JOB, "job id");
  }
  {
    auto m = push();
    m->header().setKind(static_cast<wire::Kind>(77));
    expect_rejected(m->finish(), wire::ErrorCode::BAD_KIND, "kind 77");
  }
  for (wire::Kind reserved : {wire::Kind::RESERVED7, wire::Kind::RESERVED10, wire::Kind::RESERVED11}) {
    OutMessage m(reserved, kJob, 3, 0, 1);  // kinds the schema keeps but pst never sends
    expect_rejected(m.finish(), wire::ErrorCode::BAD_KIND, "unknown message reserved");
  }
  {
    auto m = push();
    m->header().setSender(9);
    expect_rejected(m->finish(), wire::ErrorCode::UNKNOWN_SENDER, "sender 9");
  }
  {
    auto m = push();
    m->header().setSender(-1);  // only Register may come before registration
    expect_rejected(m->finish(), wire::ErrorCode::UNKNOWN_SENDER, "sender -1");
  }
  {
    OutMessage m(wire::Kind::REGISTER, kJob, -1, 0, 1);
    m.header().initNode().setEndpoint("tcp://127.0.0.1:5000");
    EXPECT_EQ(check(m.finish(), server1()).message, "");
  }
  {
    OutMessage m(wire::Kind::PUSH, kJob, 3, 7, 42);  // no push fields
    expect_rejected(m.finish(), wire::ErrorCode::BAD_HEADER, "push without its push fields");
  }
}

TEST_F(MessageTest, KeysMustExistAndBeOwned) {
  Chunk foreign;
  for (const Chunk& c : plan_->chunks())
    if (c.server == 0) foreign = c;
  {
    OutMessage m(wire::Kind::PUSH, kJob, 3, 7, 42);
    m.header().initPush();
    m.add_chunk(foreign.key, data_.data() + foreign.begin, foreign.length, nullptr);
    expect_rejected(m.finish(), wire::ErrorCode::KEY_NOT_OWNED, "belongs to server 0, not to server 1");
  }
  {
    OutMessage m(wire::Kind::PUSH, kJob, 3, 7, 42);
    m.header().initPush();
    m.add_chunk({2, 5}, data_.data(), 4, nullptr);
    expect_rejected(m.finish(), wire::ErrorCode::KEY_NOT_OWNED, "key (2, 5) does not exist");
  }
  {
    // A worker (owner -1) accepts any existing key; with no plan, none.
    OutMessage m(wire::Kind::PUSH, kJob, 3, 7, 42);
    m.header().initPush();
    m.add_chunk(foreign.key, data_.data() + foreign.begin, foreign.length, nullptr);
    Frames f = m.finish();
    EXPECT_EQ(check(std::move(f), Expectation{kJob, 5, plan_.get(), -1}).message, "");
    auto again = push();
    const Rejection r = check(again->finish(), Expectation{kJob, 5, nullptr, -1});
    EXPECT_EQ(r.code, wire::ErrorCode::KEY_NOT_OWNED);
  }
}

// bfloat16 chunks (cluster.wire = bf16) take two bytes a value: the frame
// round-trips as such, and a float32-sized frame, an unknown dtype or a
// Pull asking for one is rejected, naming what is known.
TEST_F(MessageTest, BfloatChunksTakeTwoBytesAValue) {
  std::vector<uint16_t> h(data_.size());
  to_bf16(data_.data(), h.data(), static_cast<int64_t>(h.size()));
  {
    OutMessage m(wire::Kind::PUSH, kJob, 3, 7, 42);
    m.header().initPush();
    for (const Chunk& c : owned_by_1_) m.add_chunk_bf16(c.key, h.data() + c.begin, c.length, nullptr);
    Rejection why;
    auto in = InMessage::parse(m.finish(), &why);
    ASSERT_NE(in, nullptr) << why.message;
    ASSERT_TRUE(validate(*in, server1(), &why)) << why.message;
    for (size_t i = 0; i < in->chunks(); ++i) {
      const Chunk& c = owned_by_1_[i];
      EXPECT_EQ(in->chunk_refs()[static_cast<unsigned>(i)].getDtype(), wire::DType::BFLOAT16);
      EXPECT_EQ(in->frame_bytes(i + 1), static_cast<size_t>(c.length) * 2);
      EXPECT_EQ(in->chunk_floats(i), c.length);
      std::vector<float> got(static_cast<size_t>(c.length));
      to_fp32(in->chunk_values(i), got.data(), c.length);
      for (int64_t j = 0; j < c.length; ++j)
        EXPECT_EQ(got[static_cast<size_t>(j)], data_[static_cast<size_t>(c.begin + j)]);
    }
  }
  const Chunk& c = owned_by_1_[0];
  {
    // Declared as bfloat16, carried as float32.
    OutMessage m(wire::Kind::PUSH, kJob, 3, 7, 42);
    m.header().initPush();
    m.add_chunk_bf16(c.key, h.data() + c.begin, c.length, nullptr);
    Frames f = m.finish();
    f[1] = zmq::message_t(data_.data(), static_cast<size_t>(c.length) * 4);
    expect_rejected(std::move(f), wire::ErrorCode::SIZE_MISMATCH, "frame has");
  }
  {
    OutMessage m(wire::Kind::PUSH, kJob, 3, 7, 42);
    m.header().initPush();
    m.add_chunk(c.key, data_.data() + c.begin, c.length, nullptr);
    Frames f = m.finish();
    // Rewrite the dtype to one no build knows.
    Rejection why;
    auto in = InMessage::parse(std::move(f), &why);
    ASSERT_NE(in, nullptr);
    capnp::MallocMessageBuilder b;
    b.setRoot(in->header());
    b.getRoot<wire::Header>().getChunks()[0].setDtype(static_cast<wire::DType>(9));
    Frames bad;
    const auto flat = capnp::messageToFlatArray(b);
    bad.emplace_back(flat.asBytes().begin(), flat.asBytes().size());
    bad.emplace_back(data_.data(), static_cast<size_t>(c.length) * 4);
    expect_rejected(std::move(bad), wire::ErrorCode::SIZE_MISMATCH, "dtype 9 (float32 and bfloat16 are known)");
  }
  {
    OutMessage m(wire::Kind::PULL, kJob, 3, 7, 42);
    m.header().setDtype(static_cast<wire::DType>(5));
    expect_rejected(m.finish(), wire::ErrorCode::BAD_HEADER, "pull asks for weights as dtype 5");
  }
  EXPECT_EQ(dtype_bytes(wire::DType::FLOAT32), 4);
  EXPECT_EQ(dtype_bytes(wire::DType::BFLOAT16), 2);
  EXPECT_EQ(dtype_name(wire::DType::BFLOAT16), "bfloat16");
}

TEST_F(MessageTest, SizesAndFramesMustMatch) {
  const Chunk& c = owned_by_1_[0];
  {
    // The header declares the chunk's size, the frame is one float short.
    OutMessage m(wire::Kind::PUSH, kJob, 3, 7, 42);
    m.header().initPush();
    m.add_chunk(c.key, data_.data() + c.begin, c.length, nullptr);
    Frames f = m.finish();
    f[1] = zmq::message_t(data_.data(), static_cast<size_t>(c.length - 1) * 4);
    expect_rejected(std::move(f), wire::ErrorCode::SIZE_MISMATCH, "frame has");
  }
  {
    // The header itself declares a wrong size.
    OutMessage m(wire::Kind::PUSH, kJob, 3, 7, 42);
    m.header().initPush();
    m.add_chunk(c.key, data_.data() + c.begin, c.length + 1, nullptr);
    expect_rejected(m.finish(), wire::ErrorCode::SIZE_MISMATCH, "declares");
  }
  {
    auto m = push();
    Frames f = m->finish();
    f.pop_back();
    expect_rejected(std::move(f), wire::ErrorCode::TRUNCATED, "data frames");
  }
  {
    auto m = push();
    Frames f = m->finish();
    f.emplace_back(8);
    expect_rejected(std::move(f), wire::ErrorCode::BAD_HEADER, "frames; expected");
  }
  {
    OutMessage m(wire::Kind::HEARTBEAT, kJob, 3, 0, 1);
    Frames f = m.finish();
    f.emplace_back(8);  // heartbeats carry no bytes
    expect_rejected(std::move(f), wire::ErrorCode::BAD_HEADER, "heartbeat has 2 frames");
  }
}

TEST_F(MessageTest, UndecodableHeadersAreRejected) {
  expect_rejected(Frames{}, wire::ErrorCode::BAD_HEADER, "no header frame");
  {
    Frames f;
    f.emplace_back(13);
    expect_rejected(std::move(f), wire::ErrorCode::BAD_HEADER, "8-byte words");
  }
  {
    // Random words: a segment table that points outside the frame.
    Frames f;
    const uint32_t garbage[8] = {5, 0xffffff, 0x12345678, 0x9abcdef0, 1, 2, 3, 4};
    f.emplace_back(garbage, sizeof(garbage));
    expect_rejected(std::move(f), wire::ErrorCode::BAD_HEADER, "undecodable header");
  }
  {
    // A valid encoding cut short.
    auto m = push();
    Frames f = m->finish();
    f[0] = zmq::message_t(f[0].data(), f[0].size() - 8);
    expect_rejected(std::move(f), wire::ErrorCode::BAD_HEADER, "undecodable header");
  }
  {
    // A header over the traversal limit: a NodeTable of 5000 nodes parsed
    // with a limit of 1000 words.
    OutMessage m(wire::Kind::NODE_TABLE, kJob, 0, 0, 1);
    auto nodes = m.header().initNodes(5000);
    for (unsigned i = 0; i < 5000; ++i) nodes[i].setEndpoint("tcp://127.0.0.1:5000");
    Rejection why;
    EXPECT_EQ(InMessage::parse(m.finish(), &why, 1000), nullptr);
    EXPECT_EQ(why.code, wire::ErrorCode::BAD_HEADER);
  }
}

// Every word of a header, in turn, made a struct pointer far outside the
// segment (the fuzzer's find: a Push whose push fields lay outside it): the
// header is either rejected when it is parsed, or every field a handler
// reads afterwards (the union member's, Push's, StepInfo's, Stats' lists,
// the departed lists) reads without an exception.
TEST_F(MessageTest, ABadPointerAnywhereFailsAtParseNotInAHandler) {
  auto make = [&](wire::Kind kind) {
    OutMessage m(kind, kJob, 3, 1, 9);
    if (kind == wire::Kind::PUSH) m.header().initPush().setTokens(5);
    if (kind == wire::Kind::PULL_REPLY) m.header().initStepInfo().setBatch(2);
    if (kind == wire::Kind::REPORT) {
      auto st = m.header().initStats();
      st.initContributors(2);
      st.initJoined(1)[0].setProcess(7);
    }
    if (kind == wire::Kind::MEMBERSHIP) {
      m.header().initDeparted(1).set(0, 4);
      m.header().initDepartedProcesses(1).set(0, 7);
    }
    return m.finish();
  };
  int rejected = 0;
  for (wire::Kind kind : {wire::Kind::PUSH, wire::Kind::PULL_REPLY, wire::Kind::REPORT, wire::Kind::MEMBERSHIP}) {
    const Frames good = make(kind);
    const size_t words = good[0].size() / 8;
    for (size_t w = 1; w < words; ++w) {  // (word 0: the segment table)
      std::vector<uint64_t> bytes(words);
      std::memcpy(bytes.data(), good[0].data(), good[0].size());
      bytes[w] = (uint64_t{1} << 32) | (uint64_t{0x1fffff} << 2);  // struct, offset far past the end, 1 data word
      Frames f;
      f.emplace_back(bytes.data(), bytes.size() * 8);
      Rejection why;
      auto m = InMessage::parse(std::move(f), &why);
      if (!m) {
        ++rejected;
        EXPECT_EQ(why.code, wire::ErrorCode::BAD_HEADER);
        continue;
      }
      const auto h = m->header();
      EXPECT_NO_THROW({
        switch (h.which()) {
          case wire::Header::PUSH: (void)h.getPush().getLossSum(); break;
          case wire::Header::STEP_INFO: (void)h.getStepInfo().getLead(); break;
          case wire::Header::STATS:
            for (bool c : h.getStats().getContributors()) (void)c;
            for (auto j : h.getStats().getJoined()) (void)j.getRank();
            break;
          case wire::Header::DEPARTED:
            for (int32_t r : h.getDeparted()) (void)r;
            break;
          default: break;
        }
        for (uint64_t p : h.getDepartedProcesses()) (void)p;
      }) << kind_name(kind)
         << ", word " << w;
    }
  }
  EXPECT_GT(rejected, 4) << "some pointer words were hit";
}

TEST_F(MessageTest, ErrorReplyCarriesCodeAndRequestId) {
  auto m = push();
  m->header().setJobId(1);
  Rejection why;
  auto in = InMessage::parse(m->finish(), &why);
  ASSERT_TRUE(in);
  ASSERT_FALSE(validate(*in, server1(), &why));
  Frames reply = error_reply(why, kJob, 1, in.get());
  auto back = InMessage::parse(std::move(reply), &why);
  ASSERT_TRUE(back);
  EXPECT_EQ(back->header().getKind(), wire::Kind::ERROR);
  EXPECT_EQ(back->header().getRequestId(), 42u);
  EXPECT_EQ(back->header().getError().getCode(), wire::ErrorCode::BAD_JOB);
  EXPECT_NE(std::string(back->header().getError().getMessage().cStr()).find("job id"), std::string::npos);
  EXPECT_EQ(kind_name(wire::Kind::PULL_REPLY), "pullReply");
}

// An error answer as a Status: REFORM (the job re-forms) is kAborted, which
// a node takes as "register again"; every other code is failed_precondition.
TEST_F(MessageTest, AReformAnswerIsAbortedOthersFailAPrecondition) {
  for (const auto code : {wire::ErrorCode::REFORM, wire::ErrorCode::INTERNAL, wire::ErrorCode::UNKNOWN_SENDER}) {
    Rejection why{code, "server 0 (rank 1) is gone"};
    auto back = InMessage::parse(error_reply(why, kJob, 0, nullptr), &why);
    ASSERT_TRUE(back);
    const Status s = refused(back->header().getError(), "server 1 rejected a pull");
    EXPECT_EQ(s.code(), code == wire::ErrorCode::REFORM ? StatusCode::kAborted : StatusCode::kFailedPrecondition);
    EXPECT_EQ(s.message(), "server 1 rejected a pull: server 0 (rank 1) is gone");
  }
}

// Thousands of chunks in one message: reading them all (validate, then the
// keys and data) stays within the header's traversal limit.
TEST(MessageSizeTest, ManyChunksStayWithinTheTraversalLimit) {
  auto plan = ShardPlan::make({4 * 5000}, 1, 16);
  ASSERT_TRUE(plan.ok());
  ASSERT_EQ(plan->chunks().size(), 5000u);
  std::vector<float> data(4 * 5000, 1.5f);
  OutMessage m(wire::Kind::PULL_REPLY, kJob, 1, 3, 2);
  m.header().initStepInfo();
  for (const Chunk& c : plan->chunks()) m.add_chunk(c.key, data.data() + c.begin, c.length, nullptr);
  Rejection why;
  auto in = InMessage::parse(m.finish(), &why);
  ASSERT_TRUE(in) << why.message;
  ASSERT_TRUE(validate(*in, Expectation{kJob, 3, &*plan, 0}, &why)) << why.message;
  for (size_t i = 0; i < in->chunks(); ++i) {
    ASSERT_EQ(in->key(i), plan->chunks()[i].key);
    ASSERT_EQ(in->chunk_data(i)[3], 1.5f);
  }
}

}  // namespace
}  // namespace pst
