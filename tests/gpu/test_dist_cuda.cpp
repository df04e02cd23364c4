// The NCCL backend of taxon::dist::ProcessGroup as a real group of one (torchrun --nproc-per-node 1): every
// collective on CUDA tensors goes through ProcessGroupNCCL and the TCPStore rendezvous. Built only with
// TAXON_WITH_CUDA (a CUDA LibTorch, where taxon finds nccl.h); more ranks need one GPU each.
#include "taxon/dist/process_group.hpp"

#include <ATen/ATen.h>
#include <catch2/catch.hpp>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

namespace test_dist_cuda {
inline int free_loopback_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  int port = 0;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
    port = ntohs(addr.sin_port);
  }
  ::close(fd);
  return port;
}
}  // namespace test_dist_cuda

TEST_CASE("NCCL process group of one: every collective on CUDA tensors", "[cuda]") {
#if TAXON_WITH_NCCL
  taxon::dist::LaunchEnvironment env;
  env.master_addr = "127.0.0.1";
  env.master_port = test_dist_cuda::free_loopback_port();
  env.launcher = "torchrun";
  const c10::Device cuda(c10::kCUDA, 0);
  auto group = taxon::dist::ProcessGroup::connect(
      env, taxon::dist::ProcessGroupOptions().device(cuda).timeout(std::chrono::seconds(60)));
  CHECK(group.world_size() == 1);
  CHECK(group.device() == cuda);
  at::Tensor t = at::arange(8, at::TensorOptions().device(cuda).dtype(at::kFloat));
  group.all_reduce_(t, taxon::dist::ReduceOp::max);
  CHECK(t.cpu().equal(at::arange(8, at::kFloat)));
  const at::Tensor rows = at::randn({3, 5}, at::TensorOptions().device(cuda));
  CHECK(group.all_gather(rows).equal(rows));
  CHECK(group.all_gather_uneven(rows).equal(rows));
  CHECK(group.all_gather(rows).device() == cuda);
  group.broadcast_(t);
  group.barrier();
  CHECK(group.stats().calls >= 5);
#else
  FAIL("this CUDA build of taxon found no nccl.h: the configure log says [taxon] c10d backends: ... NCCL OFF");
#endif
}
