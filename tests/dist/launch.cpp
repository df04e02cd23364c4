// taxon_launch: runs N copies of a program as the ranks of one job on this machine, like
// `torchrun --no-python --nproc-per-node N`, for tests (no Python, starts in milliseconds).
//   taxon_launch [--timeout SECONDS] N -- PROGRAM ARGS...
// Sets RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR=127.0.0.1 and a free MASTER_PORT. Exits 0 when
// every rank does; otherwise with the first failing rank's status (128+signal when killed). After --timeout
// (default 120 s) the remaining ranks are killed and it exits 124. Output lines go straight through.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

namespace {
int free_loopback_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return -1;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;  // the kernel picks an unused port
  socklen_t len = sizeof addr;
  int port = -1;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
    port = ntohs(addr.sin_port);
  }
  ::close(fd);
  return port;
}

int usage() {
  std::fprintf(stderr, "usage: taxon_launch [--timeout SECONDS] N -- PROGRAM ARGS...\n");
  return 2;
}

int exit_code_of(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return 1;
}
}  // namespace

int main(int argc, char** argv) {
  int arg = 1;
  double timeout_s = 120;
  if (arg + 1 < argc && std::strcmp(argv[arg], "--timeout") == 0) {
    timeout_s = std::atof(argv[arg + 1]);
    arg += 2;
  }
  if (arg + 2 >= argc || std::strcmp(argv[arg + 1], "--") != 0) return usage();
  const int n = std::atoi(argv[arg]);
  if (n < 1 || n > 64 || timeout_s <= 0) return usage();
  char** program = argv + arg + 2;

  const int port = free_loopback_port();
  if (port <= 0) {
    std::perror("taxon_launch: no free loopback port");
    return 1;
  }
  std::vector<pid_t> pids(n, -1);
  for (int r = 0; r < n; ++r) {
    const pid_t pid = ::fork();
    if (pid < 0) {
      std::perror("taxon_launch: fork");
      for (pid_t p : pids) {
        if (p > 0) ::kill(p, SIGKILL);
      }
      return 1;
    }
    if (pid == 0) {
      ::setenv("RANK", std::to_string(r).c_str(), 1);
      ::setenv("LOCAL_RANK", std::to_string(r).c_str(), 1);
      ::setenv("WORLD_SIZE", std::to_string(n).c_str(), 1);
      ::setenv("LOCAL_WORLD_SIZE", std::to_string(n).c_str(), 1);
      ::setenv("MASTER_ADDR", "127.0.0.1", 1);
      ::setenv("MASTER_PORT", std::to_string(port).c_str(), 1);
      ::execvp(program[0], program);
      std::perror("taxon_launch: exec");
      ::_exit(127);
    }
    pids[r] = pid;
  }

  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
  int result = 0, running = n;
  while (running > 0) {
    int status = 0;
    const pid_t done = ::waitpid(-1, &status, WNOHANG);
    if (done > 0) {
      for (int r = 0; r < n; ++r) {
        if (pids[r] != done) continue;
        pids[r] = -1;
        --running;
        const int code = exit_code_of(status);
        if (code != 0) {
          std::fprintf(stderr, "taxon_launch: rank %d exited with status %d\n", r, code);
          if (result == 0) result = code;
        }
      }
      continue;
    }
    if (std::chrono::steady_clock::now() > deadline) {
      for (int r = 0; r < n; ++r) {
        if (pids[r] <= 0) continue;
        std::fprintf(stderr, "taxon_launch: rank %d still running after %.0f s: killed\n", r, timeout_s);
        ::kill(pids[r], SIGKILL);
        ::waitpid(pids[r], &status, 0);
      }
      return 124;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return result;
}
