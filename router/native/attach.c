/*
 * attach.c - a kernel network interface given to the router: two eBPF
 * programs for the tc hooks (clsact) of the interface and of its TUN device.
 *
 * Theory of operation.  The kernel keeps layer 2 of an attached interface
 * (ARP and neighbour discovery, the MAC address, the link); every IP packet
 * belongs to the router.  On the interface's ingress, the first program
 * redirects every IPv4 and IPv6 packet to the egress of the TUN device,
 * where the router reads it (bpf_redirect; the kernel drops the Ethernet
 * header on the way into a device without one), except ARP, which is no IP
 * packet, and the neighbour discovery messages (ICMPv6 types 133 to 137),
 * which stay the kernel's.  On the TUN device's ingress, which is where the
 * packets the router writes arrive, the second program gives each packet an
 * Ethernet header of its own protocol (bpf_skb_change_head, meant for this:
 * an L3 packet bound for an L2 device) and hands it to the interface with
 * bpf_redirect_neigh: the kernel routes the destination through that
 * interface, resolves the next hop's address and sends the frame.  Neither
 * direction passes the kernel's IP forwarding: it never forwards a packet
 * between two attached interfaces, decrements no TTL and needs no firewall.
 *
 * Both are SCHED_CLS programs run in direct-action mode, without maps.
 * Loading them needs CAP_BPF (or CAP_SYS_ADMIN); attaching them, done by
 * the control plane over netlink, CAP_NET_ADMIN.
 */
#include <errno.h>
#include <linux/bpf.h>
#include <stddef.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>
#include "rt.h"

static struct bpf_insn insn(uint8_t code, uint8_t dst, uint8_t src, int16_t off,
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

#define LD_ABS(size, k) insn(BPF_LD | (size) | BPF_ABS, 0, 0, 0, (k))
#define LDX_W(dst, src, off) insn(BPF_LDX | BPF_W | BPF_MEM, (dst), (src), (off), 0)
#define STX_H(dst, src, off) insn(BPF_STX | BPF_H | BPF_MEM, (dst), (src), (off), 0)
#define MOV_REG(dst, src) insn(BPF_ALU64 | BPF_MOV | BPF_X, (dst), (src), 0, 0)
#define MOV_IMM(dst, k) insn(BPF_ALU64 | BPF_MOV | BPF_K, (dst), 0, 0, (k))
#define ADD_IMM(dst, k) insn(BPF_ALU64 | BPF_ADD | BPF_K, (dst), 0, 0, (k))
#define JEQ(reg, k, off) insn(BPF_JMP | BPF_JEQ | BPF_K, (reg), 0, (off), (k))
#define JNE(reg, k, off) insn(BPF_JMP | BPF_JNE | BPF_K, (reg), 0, (off), (k))
#define JLT(reg, k, off) insn(BPF_JMP | BPF_JLT | BPF_K, (reg), 0, (off), (k))
#define JGT(reg, k, off) insn(BPF_JMP | BPF_JGT | BPF_K, (reg), 0, (off), (k))
#define CALL(fn) insn(BPF_JMP | BPF_CALL, 0, 0, 0, (fn))
#define EXIT() insn(BPF_JMP | BPF_EXIT, 0, 0, 0, 0)

#define ETH_HLEN_ 14
#define TC_ACT_OK_ 0
#define TC_ACT_SHOT_ 2

static int load(const struct bpf_insn *prog, uint32_t n, char *log, uint32_t log_size)
{
    static const char license[] = "GPL";
    union bpf_attr attr;
    memset(&attr, 0, sizeof attr);
    attr.prog_type = BPF_PROG_TYPE_SCHED_CLS;
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

int rt_attach_ingress_load(uint32_t tun_ifindex, char *log, uint32_t log_size)
{
    /* LD_ABS reads from the Ethernet header (a tc program at ingress sees
     * the frame); a read past the packet ends the program with 0, TC_ACT_OK:
     * the kernel's.  Jump offsets count from the next instruction. */
    const struct bpf_insn prog[] = {
        MOV_REG(6, 1),                     /*  0: LD_ABS wants the skb in r6 */
        LD_ABS(BPF_H, 12),                 /*  1: EtherType */
        JEQ(0, 0x0800, 8),                 /*  2: IPv4 -> 11 */
        JNE(0, 0x86dd, 5),                 /*  3: neither (ARP, ...) -> 9 */
        LD_ABS(BPF_B, ETH_HLEN_ + 6),      /*  4: IPv6 next header */
        JNE(0, 58, 5),                     /*  5: not ICMPv6 -> 11 */
        LD_ABS(BPF_B, ETH_HLEN_ + 40),     /*  6: ICMPv6 type */
        JLT(0, 133, 3),                    /*  7: below neighbour discovery -> 11 */
        JGT(0, 137, 2),                    /*  8: above it -> 11 */
        MOV_IMM(0, TC_ACT_OK_),            /*  9: the kernel's */
        EXIT(),                            /* 10 */
        MOV_IMM(1, (int32_t)tun_ifindex),  /* 11: the router's: */
        MOV_IMM(2, 0),                     /* 12: to the TUN's egress */
        CALL(BPF_FUNC_redirect),           /* 13 */
        EXIT(),                            /* 14 */
    };
    return load(prog, sizeof prog / sizeof prog[0], log, log_size);
}

int rt_attach_egress_load(uint32_t wire_ifindex, char *log, uint32_t log_size)
{
    const struct bpf_insn prog[] = {
        MOV_REG(6, 1),                     /*  0 */
        MOV_IMM(2, ETH_HLEN_),             /*  1: room for an Ethernet header */
        MOV_IMM(3, 0),                     /*  2 */
        CALL(BPF_FUNC_skb_change_head),    /*  3 */
        JNE(0, 0, 15),                     /*  4: no room -> 20 (drop) */
        LDX_W(2, 6, offsetof(struct __sk_buff, protocol)), /* 5: network order */
        STX_H(10, 2, -8),                  /*  6 */
        MOV_REG(1, 6),                     /*  7 */
        MOV_IMM(2, 12),                    /*  8: its EtherType (the addresses, */
        MOV_REG(3, 10),                    /*  9:  zero, are the kernel's to fill) */
        ADD_IMM(3, -8),                    /* 10 */
        MOV_IMM(4, 2),                     /* 11 */
        MOV_IMM(5, 0),                     /* 12 */
        CALL(BPF_FUNC_skb_store_bytes),    /* 13 */
        MOV_IMM(1, (int32_t)wire_ifindex), /* 14 */
        MOV_IMM(2, 0),                     /* 15: the next hop from the routes */
        MOV_IMM(3, 0),                     /* 16 */
        MOV_IMM(4, 0),                     /* 17 */
        CALL(BPF_FUNC_redirect_neigh),     /* 18 */
        EXIT(),                            /* 19 */
        MOV_IMM(0, TC_ACT_SHOT_),          /* 20 */
        EXIT(),                            /* 21 */
    };
    return load(prog, sizeof prog / sizeof prog[0], log, log_size);
}
