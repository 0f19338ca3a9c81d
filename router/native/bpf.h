/*
 * bpf.h - writing and loading the data plane's small eBPF programs
 * (steer.c, attach.c): an instruction builder, the few instruction forms
 * they use, and one loader.
 */
#ifndef RT_BPF_H
#define RT_BPF_H

#include <linux/bpf.h>
#include <stdint.h>
#include <string.h>

static inline struct bpf_insn bpf_insn_of(uint8_t code, uint8_t dst, uint8_t src, int16_t off,
                                          int32_t imm)
{
    struct bpf_insn i;
    memset(&i, 0, sizeof i);
    i.code = code;
    i.dst_reg = dst & 0xf;
    i.src_reg = src & 0xf;
    i.off = off;
    i.imm = imm;
    return i;
}

#define LD_ABS(size, k) bpf_insn_of(BPF_LD | (size) | BPF_ABS, 0, 0, 0, (k))
#define LD_IND(size, reg, k) bpf_insn_of(BPF_LD | (size) | BPF_IND, 0, (reg), 0, (k))
#define LDX_W(dst, src, off) bpf_insn_of(BPF_LDX | BPF_W | BPF_MEM, (dst), (src), (off), 0)
#define STX_H(dst, src, off) bpf_insn_of(BPF_STX | BPF_H | BPF_MEM, (dst), (src), (off), 0)
#define ALU_IMM(op, reg, k) bpf_insn_of(BPF_ALU64 | (op) | BPF_K, (reg), 0, 0, (k))
#define MOV_REG(dst, src) bpf_insn_of(BPF_ALU64 | BPF_MOV | BPF_X, (dst), (src), 0, 0)
#define MOV_IMM(dst, k) bpf_insn_of(BPF_ALU64 | BPF_MOV | BPF_K, (dst), 0, 0, (k))
#define ADD_IMM(dst, k) ALU_IMM(BPF_ADD, (dst), (k))
#define XOR_REG(dst, src) bpf_insn_of(BPF_ALU64 | BPF_XOR | BPF_X, (dst), (src), 0, 0)
#define JEQ(reg, k, off) bpf_insn_of(BPF_JMP | BPF_JEQ | BPF_K, (reg), 0, (off), (k))
#define JNE(reg, k, off) bpf_insn_of(BPF_JMP | BPF_JNE | BPF_K, (reg), 0, (off), (k))
#define JLT(reg, k, off) bpf_insn_of(BPF_JMP | BPF_JLT | BPF_K, (reg), 0, (off), (k))
#define JGT(reg, k, off) bpf_insn_of(BPF_JMP | BPF_JGT | BPF_K, (reg), 0, (off), (k))
#define JA(off) bpf_insn_of(BPF_JMP | BPF_JA, 0, 0, (off), 0)
#define CALL(fn) bpf_insn_of(BPF_JMP | BPF_CALL, 0, 0, 0, (fn))
#define EXIT() bpf_insn_of(BPF_JMP | BPF_EXIT, 0, 0, 0, 0)

/* Loads program 'prog' ('n' instructions) of 'type'; its descriptor, or
 * -errno (-EPERM without CAP_BPF).  The verifier's log, if any, goes to
 * 'log' (a log too small for it does not fail the load). */
int bpf_load(uint32_t type, const struct bpf_insn *prog, uint32_t n, char *log,
             uint32_t log_size);

#endif /* RT_BPF_H */
