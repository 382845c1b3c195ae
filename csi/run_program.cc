#include "csi/run_program.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "base/unique_fd.h"

namespace sealvol::csi {

namespace {

std::string ReadAll(int fd) {
  std::string text;
  char buf[4096];
  ssize_t n;
  while ((n = ::read(fd, buf, sizeof(buf))) > 0) text.append(buf, n);
  return text;
}

}  // namespace

ProgramResult RunProgramFor(const std::vector<std::string>& argv,
                            bool capture_out) {
  int out_pipe[2], err_pipe[2];
  if (::pipe2(out_pipe, O_CLOEXEC) != 0) return {-1, "", std::strerror(errno)};
  UniqueFd out_read(out_pipe[0]), out_write(out_pipe[1]);
  if (::pipe2(err_pipe, O_CLOEXEC) != 0) return {-1, "", std::strerror(errno)};
  UniqueFd err_read(err_pipe[0]), err_write(err_pipe[1]);
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid == 0) {
    // A child (mkfs, blkid) must not outlive a killed parent: it would hold
    // the loop device open while the restarted node cleans up. The forking
    // thread waits for the child, so it outlives it unless the process dies.
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(127);
    const int null = ::open("/dev/null", O_RDWR);
    ::dup2(null, 0);
    ::dup2(capture_out ? out_pipe[1] : null, 1);
    ::dup2(err_pipe[1], 2);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    ::execvp(args[0], args.data());
    ::_exit(127);
  }
  out_write.reset();
  err_write.reset();
  ProgramResult result;
  if (pid < 0) {
    result.err = std::strerror(errno);
    return result;
  }
  result.out = ReadAll(out_read.get());
  result.err = ReadAll(err_read.get());
  int wstatus = 0;
  while (::waitpid(pid, &wstatus, 0) < 0 && errno == EINTR) {
  }
  result.exit_status = WIFEXITED(wstatus) ? WEXITSTATUS(wstatus) : -1;
  return result;
}

std::string LastLine(std::string text) {
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) {
    text.pop_back();
  }
  const size_t nl = text.rfind('\n');
  return nl == std::string::npos ? text : text.substr(nl + 1);
}

absl::Status RunProgram(const std::vector<std::string>& argv) {
  const ProgramResult r = RunProgramFor(argv, /*capture_out=*/false);
  if (r.exit_status == 0) return absl::OkStatus();
  return absl::InternalError(absl::StrCat(absl::StrJoin(argv, " "),
                                          ": exit status ", r.exit_status, ": ",
                                          LastLine(r.err)));
}

}  // namespace sealvol::csi
