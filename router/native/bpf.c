/*
 * bpf.c - loading the data plane's eBPF programs (see bpf.h).
 */
#include <errno.h>
#include <sys/syscall.h>
#include <unistd.h>
#include "bpf.h"

int bpf_load(uint32_t type, const struct bpf_insn *prog, uint32_t n, char *log,
             uint32_t log_size)
{
    static const char license[] = "GPL";
    union bpf_attr attr;
    memset(&attr, 0, sizeof attr);
    attr.prog_type = type;
    attr.insn_cnt = n;
    attr.insns = (uint64_t)(uintptr_t)prog;
    attr.license = (uint64_t)(uintptr_t)license;
    if (log && log_size) {
        log[0] = 0;
        attr.log_buf = (uint64_t)(uintptr_t)log;
        attr.log_size = log_size;
        attr.log_level = 1;
    }
    long fd = syscall(SYS_bpf, BPF_PROG_LOAD, &attr, sizeof attr);
    if (fd < 0 && log && log_size && errno == ENOSPC) { /* log too small: load anyway */
        attr.log_buf = 0;
        attr.log_size = 0;
        attr.log_level = 0;
        fd = syscall(SYS_bpf, BPF_PROG_LOAD, &attr, sizeof attr);
    }
    return fd < 0 ? -errno : (int)fd;
}
