// The job configuration: typed option structs with defaults, filled from a
// TOML file and `--set section.key=value` overrides, validated in one place.
// Every field is declared once in config.cc with its documentation; unknown
// keys and bad values are errors that say what is allowed.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"

namespace pst {

enum class ModelKind { kEncoderDecoder, kDecoderOnly };
enum class NormPlacement { kPre, kPost, kDeepNorm };
// kSwiGLU is a gated feed-forward (Shazeer 2020): linear1 makes 2F values per
// row, silu of the first F times the second F.
enum class Activation { kRelu, kGelu, kGeluTanh, kSwiGLU };
// kRope rotates each self-attention's queries and keys by their position (Su
// et al. 2021) instead of adding a table to the embeddings.
enum class Positions { kSinusoidal, kLearned, kRope };
enum class NormType { kLayerNorm, kRmsNorm };
enum class InitScheme { kXavierUniform, kKaimingNormal, kNormal, kDeepNet };
enum class Task { kG2P, kLM };
// How a G2P lexicon is written (docs/design.md, Data): detected from its first
// entry, Festival's CMUdict, CMU's cmudict.dict, or word<TAB>phones.
enum class LexiconFormat { kAuto, kFestival, kCmudict, kTsv };
// A language model's tokens: bytes, or the pieces of a SentencePiece model.
enum class TokenizerKind { kBytes, kSentencePiece };
enum class OptimizerKind { kAdamW, kAdam };
enum class ScheduleKind { kConstant, kLinear, kCosine, kStep, kExponential, kInverseSqrt };
enum class DeviceKind { kAuto, kCpu, kCuda };
// How servers and workers stay in step (docs/design.md, One BSP step): bulk-synchronous,
// asynchronous, or stale-synchronous with a bound.
enum class Consistency { kBsp, kAsp, kSsp };
// A job of several servers or workers in one process (no mpirun, no --role):
// each role a thread over inproc sockets, or one thread playing every worker
// in turn (the reference the tests hold distributed jobs to).
enum class InProcess { kThreads, kSequential };
enum class Overlap { kAuto, kOn, kOff };
// What carries pushes and pulls between workers and servers: ZeroMQ over
// TCP, or MPI point-to-point messages (a job launched by mpirun or srun
// --mpi=pmix, on a cluster whose fast fabric MPI reaches).
enum class Transport { kZmq, kMpi };
// How gradients and weights travel between workers and servers: float32,
// or bfloat16 (half the bytes; the servers keep float32 weights and sum in
// float32).
enum class WireFormat { kFp32, kBf16 };
// How a bfloat16 wire rounds pushed gradients: to nearest (ties to even),
// or stochastically (up or down, unbiased; core/bf16.h).
enum class WireRounding { kNearest, kStochastic };
// Precision of the model's matrix products (inputs and outputs stay fp32):
// fp32, TF32 tensor cores (CUDA; fp32 on the CPU), or bf16 operands with fp32
// accumulation (CUDA's tensor cores; oneDNN on CPUs with AVX512_BF16 or AMX).
enum class MatmulPrecision { kFp32, kTf32, kBf16 };
// The library of the CPU backend's float32 products: OpenBLAS's sgemm, or
// oneDNN's matmul (Debian's libdnnl, which bf16 products use already).
enum class CpuBlas { kOpenBlas, kOneDnn };

// A parsed train.device: "auto", "cpu", "cuda" or "cuda:N". index is N, or
// -1 for "auto" and "cuda": the device of the process's local rank
// (model/backend.h, local_device).
struct DeviceSpec {
  DeviceKind kind = DeviceKind::kAuto;
  int index = -1;
};

struct ModelConfig {
  ModelKind kind = ModelKind::kEncoderDecoder;   // encoder_decoder | decoder_only
  int64_t d_model = 256;                         // width of the residual stream
  int64_t heads = 4;                             // attention heads; must divide d_model
  int64_t ffn_dim = 1024;                        // hidden width of the feed-forward block
  int64_t encoder_layers = 3;                    // ignored for decoder_only
  int64_t decoder_layers = 3;                    // the layers of a decoder_only model
  NormPlacement norm = NormPlacement::kPost;     // pre | post | deepnorm
  NormType norm_type = NormType::kLayerNorm;     // layernorm | rmsnorm (scale only, no bias)
  Activation activation = Activation::kRelu;     // relu | gelu | gelu_tanh | swiglu
  Positions positions = Positions::kSinusoidal;  // sinusoidal | learned | rope
  double rope_theta = 10000.0;                   // base of the rotary frequencies (positions = rope)
  // Key/value heads (grouped-query attention): must divide heads; 0 = heads.
  int64_t kv_heads = 0;
  int64_t max_len = 64;                          // longest sequence (positions table size)
  bool tie_embeddings = true;                    // output projection shares the target embedding
  bool bias = true;                              // biases in linear layers
  bool scale_embeddings = true;                  // multiply embeddings by sqrt(d_model)
  double dropout = 0.1;                          // residual and feed-forward dropout
  double attention_dropout = 0.1;                // dropout on attention probabilities
  double embedding_dropout = 0.1;                // dropout after embedding + positions
  double layernorm_eps = 1e-5;                   // LayerNorm epsilon
  InitScheme init = InitScheme::kXavierUniform;  // xavier_uniform | kaiming_normal | normal | deepnet
  double init_std = 0.02;                        // sigma of `normal` init and of learned positions
};

struct DataConfig {
  Task task = Task::kG2P;  // g2p (CMUdict) | lm (bytes of text files)
  std::string path;        // data file or directory; empty = the task's Debian default
  // Explicit split files instead of the hash split of data.path (docs/design.md, Data): each
  // is read whole into its split; valid and test may be left empty (not evaluated).
  std::string train;                            // training data file (lm: or directory); set with data.path empty
  std::string valid;                            // validation data file or directory (with data.train; empty = none)
  std::string test;                             // test data file or directory (with data.train; empty = none)
  LexiconFormat format = LexiconFormat::kAuto;  // g2p lexicon: auto | festival | cmudict | tsv (docs/design.md, Data)
  int64_t batch_size = 256;                     // examples (words or sequences) per batch
  int64_t seq_len = 256;                        // lm: tokens per training sequence
  TokenizerKind tokenizer = TokenizerKind::kBytes;  // lm: bytes | sentencepiece (docs/design.md, Tokenizers)
  // lm with tokenizer = sentencepiece: the .model file of `pst tokenizer train`.
  std::string tokenizer_model;
  int64_t max_examples = 0;       // use only the first N training examples (0 = all)
  int64_t eval_max_examples = 0;  // cap on validation examples per evaluation (0 = all)
  int64_t test_max_examples = 0;  // cap on test examples (G2P: words) at the end of training (0 = all)
};

struct OptimConfig {
  OptimizerKind algorithm = OptimizerKind::kAdamW;  // adamw (decoupled) | adam (L2 in the gradient)
  double lr = 1e-3;                                 // peak learning rate (for inverse_sqrt: a multiplier)
  double beta1 = 0.9;                               // decay of the first moment (the gradient's running mean)
  double beta2 = 0.98;                              // decay of the second moment (the squared gradient's running mean)
  double eps = 1e-9;                                // added to the second moment's square root
  double weight_decay = 0.01;     // adamw: decoupled decay per step (lr * wd * w); adam: L2 coefficient
  bool decay_embeddings = false;  // also decay embeddings and learned positions
  double clip_norm = 1.0;         // global-norm clipping threshold (0 = off)
};

struct ScheduleConfig {
  ScheduleKind kind = ScheduleKind::kCosine;  // constant | linear | cosine | step | exponential | inverse_sqrt
  int64_t warmup_steps = 0;                   // linear warmup from lr/warmup to lr
  double min_lr = 0.0;                        // floor of linear and cosine decay
  int64_t total_steps = 0;                    // decay horizon (0 = train.steps)
  int64_t cycle_steps = 0;                    // cosine: first restart period (0 = no restarts, SGDR otherwise)
  int64_t cycle_mult = 1;                     // cosine: growth factor of the restart period
  int64_t step_size = 1000;                   // step: decay every N steps
  double gamma = 0.5;                         // step: factor per decay
  double decay_rate = 1e-4;                   // exponential: lr0 * exp(-decay_rate * t)
};

struct TrainConfig {
  int64_t steps = 10000;  // optimizer steps to run
  // Passes over the training data instead: train.steps becomes epochs x
  // ceil(batches per epoch / (workers x accumulate)) (0 = train.steps rules).
  int64_t epochs = 0;
  // Micro-batches (of data.batch_size) each worker sums into one gradient per
  // step: the update of a K-times larger batch at the memory of one.
  int64_t accumulate = 1;
  int64_t seed = 1;              // seeds init, shuffling and dropout
  int64_t threads = 0;           // CPU threads (0 = all cores)
  double label_smoothing = 0.1;  // share of the target's probability spread over all classes
  int64_t log_every = 50;        // steps between log lines
  int64_t eval_every = 1000;     // steps between validation runs (0 = only at the end)
  double max_minutes = 0;        // stop after this wall time (0 = no limit)
  // Early stopping: end training after this many validations in a row that
  // do not improve on the best (0 = off; needs eval_every > 0).
  int64_t patience = 0;
  // Write best.safetensors at each better validation, and end with the best
  // weights: model.safetensors and the test metrics are theirs.
  bool keep_best = false;
  // The validation figure of both (lower is better): auto (g2p: wer, lm: loss) | loss | wer | per.
  std::string best_metric = "auto";
  std::string output = "runs/default";  // directory for model.safetensors and logs
  // A fresh job into an output that holds another run's model, metrics or
  // checkpoints removes them (`--overwrite`); false: the job refuses to start.
  bool overwrite = false;
  bool test_at_end = true;  // evaluate the test split after the last step
  // auto | cpu | cuda | cuda:N (auto: CUDA if present, else CPU; auto and
  // cuda: the GPU of the process's local rank, modulo the visible devices)
  std::string device = "auto";
  MatmulPrecision matmul = MatmulPrecision::kFp32;  // matrix products: fp32 | tf32 (CUDA) | bf16 (CUDA, AVX512_BF16)
  // The CPU backend's float32 products (the attention's too with matmul =
  // bf16): openblas | onednn. Each gives the same bits for any thread count;
  // the two differ in the last bits (a resume with the other one warns).
  CpuBlas blas = CpuBlas::kOpenBlas;
  std::string log_level = "info";  // trace | debug | info | warn | error | critical | off
};

// The processes of a job (docs/design.md, Roles and launch; Streaming). Under mpirun the number of
// workers is the number of ranks less the scheduler and the servers; a run
// without mpirun plays the workers one after another in one process (the
// same shards, the same steps).
struct ClusterConfig {
  int64_t servers = 1;            // parameter servers (S)
  int64_t workers = 1;            // workers (W) of a run without mpirun
  int64_t chunk_bytes = 4 << 20;  // largest piece of a tensor that one message carries
  // Workers push each layer during backward and pull in layer order during
  // forward. auto: on for GPU workers and for processes with a host of their
  // own, off where CPU workers share their host's cores with the job's
  // other processes (the traffic would take cycles from compute).
  Overlap overlap = Overlap::kAuto;  // auto | on | off
  // BSP, whatever overlap says: a server sends the waiting pulls its updated
  // weights every stream_bytes before its update ends (a shard no larger is
  // sent whole).
  int64_t stream_bytes = 256 << 10;
  double timeout_s = 120;  // longest wait for a peer of a running job before it fails, naming it
  // Longest wait for the job's processes to start: the rendezvous, loading
  // data and the start barrier (containers may be pulled and started late).
  double start_timeout_s = 600;
  // Liveness (docs/design.md, Membership): every process sends the scheduler
  // a heartbeat from a thread of its own (busy compute does not delay it).
  double heartbeat_s = 1.0;      // seconds between a process's heartbeats
  int64_t heartbeat_misses = 5;  // a process silent this many heartbeats is dead (a --role worker: removed)
  // A --role job goes on without a dead worker while at least this many
  // remain; below it the job stops with a checkpoint.
  int64_t min_workers = 1;
  // A --role BSP job takes workers that register after it has started (a
  // restarted or added container) up to this many at once; they join at a
  // step boundary. 0: cluster.workers (the job only refills the places of
  // removed workers).
  int64_t max_workers = 0;
  // A --role BSP job that loses a server re-forms instead of ending, this
  // many times at most: every node registers again, a replacement server
  // (a restarted process or container) takes the lost one's place, and
  // training resumes from the newest complete checkpoint. 0: a lost server
  // ends the job.
  int64_t max_restarts = 3;
  Consistency consistency = Consistency::kBsp;  // bsp | asp | ssp
  int64_t staleness = 2;                        // ssp: how many clocks a worker may run ahead of the slowest
  InProcess in_process = InProcess::kThreads;   // threads | sequential (runs without mpirun)
  // Address servers (and an mpirun job's scheduler) bind and advertise: an
  // IPv4 address, a host name, or auto: the IPv4 address of
  // cluster.interface, or of the first interface that is up and not loopback
  // (a container's eth0, one host of several).
  std::string host = "127.0.0.1";
  std::string interface = "";  // with host = auto: the interface to take the address of (e.g. eth0)
  // Ports the servers' (and an mpirun job's scheduler's) ZeroMQ sockets and
  // an ephemeral /metrics port (metrics.port = 0) listen on, FIRST-LAST
  // (e.g. 30000-30100), for firewalls; each takes the first free one;
  // empty: ephemeral ports.
  std::string port_range = "";
  // What carries the tensors of pushes and pulls: zmq (TCP sockets), or mpi:
  // MPI point-to-point messages on the fabric Open MPI picks (shared memory
  // within a host, InfiniBand through UCX, TCP), for jobs launched by
  // mpirun or srun --mpi=pmix. The messages, their checks and deadlines are
  // the same; control traffic (registration, heartbeats) stays on ZeroMQ.
  Transport transport = Transport::kZmq;  // zmq | mpi
  // Precision of pushed gradients and pulled weights on the wire: fp32, or
  // bf16 (rounded to nearest even; half the bytes). The servers keep fp32
  // weights and Adam state and sum the pushes in fp32; workers compute on
  // the rounded weights, and pull exact fp32 weights to validate and to
  // write the model. No effect where nothing travels: in_process =
  // sequential, or one server and one worker in one process.
  WireFormat wire = WireFormat::kFp32;  // fp32 | bf16
  // How cluster.wire = bf16 rounds the gradients a worker pushes: nearest
  // (ties to even), or stochastic: up or down to the bfloat16 values around
  // each value, with the probabilities that make its expectation the
  // gradient's, from random bits keyed by train.seed, the step, the worker
  // and the value's place in the model (the same bits in every launch mode
  // and for any servers). Pulled weights are rounded to nearest either way.
  WireRounding wire_rounding = WireRounding::kNearest;  // nearest | stochastic
};

// Who may connect to a job's TCP and IPC sockets (comm/security.h):
//   secret (the default): only a process that proves the job's secret when it
//     connects (ZeroMQ PLAIN through the ZAP handler); nothing is encrypted.
//   curve: only a holder of the job's CURVE key pair, and everything on the
//     wire is encrypted (costs throughput; docs/benchmarks.md measures it).
//   none: anyone who reaches a port (a network that is private to the job).
enum class SecurityMode { kNone, kSecret, kCurve };

struct SecurityConfig {
  SecurityMode mode = SecurityMode::kSecret;  // secret (proved at connect) | curve (keys, encrypted) | none (open)
  // The job's keys (pst keygen; a container secret): the secret and the key
  // pair. Empty: an mpirun job makes them at launch and hands them to its
  // ranks over MPI; processes started with --role need the file.
  std::string key_file = "";
};

// Prometheus metrics (docs/operations.md, Metrics): every process serves /metrics.
struct MetricsConfig {
  bool enabled = true;             // serve /metrics and /healthz
  std::string bind = "127.0.0.1";  // address the /metrics endpoints bind
  int64_t port = 0;                // base port: a process serves at port + its rank; 0: an ephemeral port
  std::string file_sd;  // Prometheus file_sd JSON the job writes; empty: <train.output>/prometheus-targets.json
  double linger_s = 0;  // keep serving /metrics this long after training ends (one more scrape)
};

// Sharded checkpoints (docs/design.md, Checkpoints), written by the servers of a BSP job:
// every every_steps steps, every every_minutes minutes, and at a graceful
// stop (a signal, core/stop.h).
// What a checkpoint that cannot be completed (a full disk) does to the job:
// continue training (the previous checkpoint stays the latest) or stop after
// the next step.
enum class CheckpointFailure { kContinue, kStop };

struct CheckpointConfig {
  int64_t every_steps = 0;   // a checkpoint after every this many steps; 0: none
  double every_minutes = 0;  // one at the first step that ends this long after the last; 0: none
  std::string dir;           // root of the step-NNNNNNNNN directories; empty: <train.output>/checkpoints
  int64_t keep = 3;          // complete checkpoints kept (older ones are removed)
  CheckpointFailure on_failure = CheckpointFailure::kContinue;  // continue | stop
  // Start from: "" (a fresh job), "latest" (the newest complete checkpoint
  // under dir), "auto" (latest if dir holds any checkpoint, else a fresh
  // job: a container that restarts continues; a --role process whose newest
  // checkpoint is at train.steps exits 0, the job having run to its end) or a
  // checkpoint directory.
  std::string resume;
};

struct JobConfig {
  ModelConfig model;
  DataConfig data;
  OptimConfig optim;
  ScheduleConfig schedule;
  TrainConfig train;
  ClusterConfig cluster;
  MetricsConfig metrics;
  CheckpointConfig checkpoint;
  SecurityConfig security;
};

// Parses a TOML file, applies overrides ("section.key=value"), validates.
Result<JobConfig> load_config(const std::string& path, const std::vector<std::string>& overrides);
// The same from TOML text (name is used in messages).
Result<JobConfig> parse_config(const std::string& toml_text, const std::string& name,
                               const std::vector<std::string>& overrides);
// The overrides that environment variables ask for, for containers:
// PST_<SECTION>_<KEY>=VALUE is --set section.key=VALUE (PST_TRAIN_STEPS=500
// is train.steps=500). Variables whose next word after PST_ is not a section
// are someone else's and left alone; a known section with an unknown key is
// an error that names the variable. environment: NAME=VALUE strings.
Result<std::vector<std::string>> env_overrides(const std::vector<std::string>& environment);
// Applies one "section.key=value" override.
Status apply_override(JobConfig& config, const std::string& assignment);
// Checks cross-field constraints and ranges.
Status validate(const JobConfig& config);
// The resolved configuration as TOML text (every field, in declaration order).
std::string to_toml(const JobConfig& config);
// The same with each key's one-line documentation as a comment above it
// (`pst config defaults`: a job file of every default).
std::string to_documented_toml(const JobConfig& config);

// Every configurable key, "section.key", in the order of to_toml.
std::vector<std::string> config_keys();

// A key's one-line documentation: its comment in this header, collected by
// scripts/config_docs.py at build time.
struct ConfigDoc {
  const char* section;
  const char* key;
  const char* doc;
};
const std::vector<ConfigDoc>& config_docs();
// The job's id: a hash of the settings every process of the job must share,
// that is all but those that may differ from process to process
// (train.device, train.threads, train.log_level, cluster.host,
// cluster.interface, cluster.port_range, [metrics], security.key_file). Messages carry it; a
// process with another id is refused at the rendezvous.
uint64_t job_id(const JobConfig& config);

const char* to_string(ModelKind v);
const char* to_string(NormPlacement v);
const char* to_string(Activation v);
const char* to_string(Positions v);
const char* to_string(NormType v);
const char* to_string(TokenizerKind v);
const char* to_string(InitScheme v);
const char* to_string(Task v);
const char* to_string(LexiconFormat v);
const char* to_string(MatmulPrecision v);
const char* to_string(CpuBlas v);
const char* to_string(Consistency v);
const char* to_string(InProcess v);
const char* to_string(Overlap v);
const char* to_string(Transport v);
const char* to_string(WireFormat v);
const char* to_string(WireRounding v);
const char* to_string(SecurityMode v);
const char* to_string(CheckpointFailure v);

// Parses train.device; the error names the value and what is allowed.
Result<DeviceSpec> parse_device(const std::string& text);
// A count written in decimal: the whole of `text` is digits (no sign, no
// spaces) of a value that fits; nothing otherwise.
std::optional<int64_t> parse_count(std::string_view text);

}  // namespace pst
