# pst's wire protocol (docs/design.md, Wire protocol). A message is a ZeroMQ multipart:
# frame 0 is a Header in Cap'n Proto's flat encoding; each entry of
# Header.chunks describes one further frame that carries that chunk's raw
# little-endian tensor bytes, in order. Receivers validate every header
# (comm/message.h) before acting on it.
@0xb014108b3be14759;

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("pst::wire");

# Bumped on any incompatible change; a receiver rejects other versions.
const protocolVersion :UInt16 = 1;

enum Kind {
  register @0;         # a node announces itself to the scheduler
  nodeTable @1;        # the scheduler's answer: every node of the job
  push @2;             # gradient chunks of one worker for one step
  pushAck @3;
  pull @4;             # a worker asks for chunks of weights version >= step
  pullReply @5;        # the weights, one frame per chunk
  heartbeat @6;
  reserved7 @7;        # never sent; receivers reject it (a Cap'n Proto enumerant cannot be removed)
  barrier @8;
  report @9;           # to the scheduler: loss and metrics, or a server's gradient statistics
  reserved10 @10;      # never sent; receivers reject it
  reserved11 @11;      # never sent; receivers reject it
  shutdown @12;
  error @13;           # the answer to a message that was rejected
  membership @14;      # the scheduler to a server's heartbeat line: the workers taken as dead
}

enum Role {
  scheduler @0;
  server @1;
  worker @2;
}

enum DType {
  float32 @0;
  bfloat16 @1;         # cluster.wire = bf16: the upper half of a float32, rounded to nearest even
}

# A chunk of a tensor: key (tensor index, chunk index) of the shard plan.
struct ChunkRef {
  tensor @0 :Int32;
  chunk @1 :Int32;
  dtype @2 :DType;
  bytes @3 :UInt64;    # size of the frame that carries it (elements x the dtype's size)
}

struct NodeInfo {
  rank @0 :Int32;
  role @1 :Role;
  index @2 :Int32;     # among the nodes of its role
  endpoint @3 :Text;   # where it receives, e.g. tcp://10.0.0.2:5601
  host @4 :Text;
  metrics @5 :Text;    # host:port of its Prometheus /metrics; empty when off
  joinOnly @6 :Bool;   # register: a worker that may only join a running job (its train.output
                       # holds another run), never be one of the workers a job starts with
}

struct PushInfo {
  tokens @0 :Int64;    # target tokens behind the gradient
  lossSum @1 :Float64;
  stop @2 :Bool;       # the worker was asked to stop (a signal): the job stops after this step
}

struct StepInfo {
  applied @0 :Bool;
  appliedSteps @1 :Int64;
  gradNorm @2 :Float64;
  clipCoef @3 :Float64;
  lr @4 :Float64;
  stop @5 :Bool;       # the job stops at this version (graceful stop; its checkpoint is written)
  batch @6 :Int64 = -1; # pullReply in BSP: the batch of the epoch order (counted over epochs) the
                        # pulling worker trains on next; -1: its own walk (ASP, SSP)
  lead @7 :Bool;        # pullReply in BSP: the pulling worker is the lowest of the next step's
                        # workers (worker 0 unless it was removed): at the end it writes the model
}

# A server's share of a BSP round's gradient statistics, and (in the
# scheduler's answer) their sum over all servers.
struct GradStatsInfo {
  sumSquares @0 :Float64;
  nonfinite @1 :Bool;
  checkpoint @2 :Bool; # a checkpoint of this round is due
  stop @3 :Bool;       # the job stops after this round
  contributors @4 :List(Bool); # per worker: its push of this round is in this server's sum
                               # (the scheduler's answer: in every server's)
  redo @5 :Bool;       # the answer: servers summed different workers; all reduce again over contributors
  joined @6 :List(Joiner); # the answer (without redo): workers that join the job at the next round
  round @7 :UInt8;     # a server's question to another once the scheduler is gone: which sum of
                       # the step it lacks (1, or 2 after a redo); the answer is that sum, or an error
}

# A worker that joins a running job: its rank and the process that speaks for it.
struct Joiner {
  rank @0 :Int32;
  process @1 :UInt64;
}

enum ErrorCode {
  badVersion @0;
  badJob @1;
  unknownSender @2;
  badKind @3;
  keyNotOwned @4;
  sizeMismatch @5;
  truncated @6;
  badHeader @7;
  badStep @8;
  internal @9;
  spoofed @10;         # a rank's message from another process than the one that rank is bound to (never answered)
  reform @11;          # the job re-forms after a server was lost: register again, resume from the newest checkpoint
  later @12;           # a server asked for a sum of statistics it lacks while it still hears the scheduler: ask again
}

struct ErrorInfo {
  code @0 :ErrorCode;
  message @1 :Text;
}

struct Header {
  version @0 :UInt16;
  kind @1 :Kind;
  jobId @2 :UInt64;
  sender @3 :Int32;      # rank in the node table; -1 before registration
  step @4 :Int64;        # weights version the message is about
  requestId @5 :UInt64;  # echoed by the answer
  chunks @6 :List(ChunkRef);
  union {
    none @7 :Void;
    node @8 :NodeInfo;            # register
    nodes @9 :List(NodeInfo);     # nodeTable
    push @10 :PushInfo;           # push
    stepInfo @11 :StepInfo;       # pullReply, pushAck
    reserved12 @12 :Int64;        # never set
    report @13 :PushInfo;         # report: tokens and loss of a step
    error @14 :ErrorInfo;         # error
    stats @16 :GradStatsInfo;     # report: gradient statistics of round `step`
    departed @17 :List(Int32);    # membership: ranks of the workers removed from the job so far
  }
  rank @15 :Int32;       # nodeTable: the rank given to the node it answers
  process @18 :UInt64;   # the sending process's identity (random, fixed for its life): a rank
                         # given again to a new process (elastic join) is told from the old one
  joined @19 :Bool;      # nodeTable: the node joins a running job (its barrier is answered with
                         # the step it starts at, in `step`)
  departedProcesses @20 :List(UInt64); # membership: the process of each rank in `departed`
  startWorkers @21 :Int32; # nodeTable: the workers the job starts with (cluster.workers, or after a
                           # re-form the members it had); 0: cluster.workers
  reformed @22 :Bool;      # nodeTable: the job re-forms after a server was lost: every node resumes
                           # from the newest complete checkpoint
  dtype @23 :DType;        # pull: the dtype the reply's chunks carry (bfloat16 only where the job's
                           # cluster.wire is bf16; float32, the servers' exact weights, always)
}
