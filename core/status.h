// Status and Result<T>: how pst reports failures that come from outside the
// program (files, configs, peers, bad messages). Invariants use PST_CHECK.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <string>
#include <utility>
#include <variant>

#include <fmt/format.h>

namespace pst {

enum class StatusCode {
  kOk = 0,
  kInvalidArgument,  // a config value, a command-line flag, a request field
  kNotFound,         // a file or a key that is not there
  kDataLoss,         // a file or message that is truncated or corrupt
  kIo,               // the OS refused a read or write
  kFailedPrecondition,
  kDeadlineExceeded,
  kInternal,
  kAborted,  // the job re-forms (a server was lost): the node registers again and resumes
};

const char* status_code_name(StatusCode code);

// A Status is either OK or carries a code and a message that names the
// operation and the bad value. Cheap to copy when OK.
class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status ok_status() { return Status(); }
  bool ok() const { return code_ == StatusCode::kOk; }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }
  std::string to_string() const;

  // Returns a copy whose message is "context: message".
  Status with_context(const std::string& context) const;

 private:
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
};

template <typename... Args>
Status invalid_argument(fmt::format_string<Args...> f, Args&&... args) {
  return Status(StatusCode::kInvalidArgument, fmt::format(f, std::forward<Args>(args)...));
}
template <typename... Args>
Status not_found(fmt::format_string<Args...> f, Args&&... args) {
  return Status(StatusCode::kNotFound, fmt::format(f, std::forward<Args>(args)...));
}
template <typename... Args>
Status data_loss(fmt::format_string<Args...> f, Args&&... args) {
  return Status(StatusCode::kDataLoss, fmt::format(f, std::forward<Args>(args)...));
}
template <typename... Args>
Status io_error(fmt::format_string<Args...> f, Args&&... args) {
  return Status(StatusCode::kIo, fmt::format(f, std::forward<Args>(args)...));
}
template <typename... Args>
Status failed_precondition(fmt::format_string<Args...> f, Args&&... args) {
  return Status(StatusCode::kFailedPrecondition, fmt::format(f, std::forward<Args>(args)...));
}

template <typename... Args>
Status deadline_exceeded(fmt::format_string<Args...> f, Args&&... args) {
  return Status(StatusCode::kDeadlineExceeded, fmt::format(f, std::forward<Args>(args)...));
}

template <typename... Args>
Status aborted(fmt::format_string<Args...> f, Args&&... args) {
  return Status(StatusCode::kAborted, fmt::format(f, std::forward<Args>(args)...));
}

// Result<T> holds a T or a non-OK Status.
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}        // NOLINT(google-explicit-constructor)
  Result(Status status) : v_(std::move(status)) {  // NOLINT(google-explicit-constructor)
    if (std::get<Status>(v_).ok()) {
      v_ = Status(StatusCode::kInternal, "Result constructed from an OK status");
    }
  }

  bool ok() const { return std::holds_alternative<T>(v_); }
  Status status() const { return ok() ? Status() : std::get<Status>(v_); }
  T& value() & { return std::get<T>(v_); }
  const T& value() const& { return std::get<T>(v_); }
  T&& value() && { return std::get<T>(std::move(v_)); }
  T* operator->() { return &std::get<T>(v_); }
  const T* operator->() const { return &std::get<T>(v_); }
  T& operator*() & { return std::get<T>(v_); }
  const T& operator*() const& { return std::get<T>(v_); }

 private:
  std::variant<T, Status> v_;
};

[[noreturn]] void check_failed(const char* file, int line, const char* cond, const std::string& msg);

}  // namespace pst

#define PST_CONCAT_INNER(a, b) a##b
#define PST_CONCAT(a, b) PST_CONCAT_INNER(a, b)

#define PST_RETURN_IF_ERROR(expr)              \
  do {                                         \
    ::pst::Status pst_status_ = (expr);        \
    if (!pst_status_.ok()) return pst_status_; \
  } while (0)

#define PST_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                              \
  if (!tmp.ok()) return tmp.status();             \
  lhs = std::move(tmp).value()

#define PST_ASSIGN_OR_RETURN(lhs, expr) PST_ASSIGN_OR_RETURN_IMPL(PST_CONCAT(pst_result_, __LINE__), lhs, expr)

// Invariant checks: abort with file:line. Never use for input from outside.
#define PST_CHECK(cond)                                              \
  do {                                                               \
    if (!(cond)) ::pst::check_failed(__FILE__, __LINE__, #cond, ""); \
  } while (0)

#define PST_CHECK_MSG(cond, ...)                                                           \
  do {                                                                                     \
    if (!(cond)) ::pst::check_failed(__FILE__, __LINE__, #cond, fmt::format(__VA_ARGS__)); \
  } while (0)
