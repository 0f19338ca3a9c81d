/*
 * steer.c - the queue a packet is written to, chosen in the kernel: an eBPF
 * steering program for multi-queue TUN devices (TUNSETSTEERINGEBPF).
 *
 * Theory of operation.  A TUN device hands the router every packet its
 * hosts send through one queue per reader; when the router cannot keep up
 * (a host flooding SYNs faster than one read() per packet drains them), the
 * queue fills and the kernel drops whatever comes next, established
 * connections' packets with the flood's, and each loss costs a TCP
 * retransmission timeout.  This program, run by the kernel for every packet
 * before it is queued, puts the packets that open TCP connections (SYN set,
 * ACK clear) in a queue of their own, read by a worker of their own; every
 * other packet goes to queue 0.  A flood then fills only its own queue, and
 * established traffic never waits behind it.
 *
 * It is a socket filter of 25 instructions with no maps and no helpers:
 * LD_ABS/LD_IND read the packet from its IP header (a TUN device has no link
 * header), and a read past the packet ends the program with 0.  Loading it
 * needs CAP_BPF (or CAP_SYS_ADMIN); attaching it needs only the device.
 */
#include "bpf.h"
#include "rt.h"

int rt_steer_load(uint32_t syn_queue, char *log, uint32_t log_size)
{
    /* Offsets of the jumps are counted from the next instruction; the
     * comments number the instructions. */
    struct bpf_insn prog[] = {
        MOV_REG(6, 1),                       /*  0: LD_ABS wants the skb in r6 */
        LD_ABS(BPF_B, 0),                    /*  1: version and IHL */
        ALU_IMM(BPF_RSH, 0, 4),              /*  2 */
        JEQ(0, 6, 12),                       /*  3: IPv6 -> 16 */
        JNE(0, 4, 18),                       /*  4: neither -> 23 */
        LD_ABS(BPF_B, 9),                    /*  5: IPv4 protocol */
        JNE(0, 6, 16),                       /*  6: not TCP -> 23 */
        LD_ABS(BPF_H, 6),                    /*  7: flags and fragment offset */
        ALU_IMM(BPF_AND, 0, 0x1fff),         /*  8 */
        JNE(0, 0, 13),                       /*  9: a later fragment -> 23 */
        LD_ABS(BPF_B, 0),                    /* 10 */
        ALU_IMM(BPF_AND, 0, 0xf),            /* 11 */
        ALU_IMM(BPF_LSH, 0, 2),              /* 12: IHL * 4 */
        MOV_REG(7, 0),                       /* 13 */
        LD_IND(BPF_B, 7, 13),                /* 14: TCP flags */
        JA(3),                               /* 15 -> 19 */
        LD_ABS(BPF_B, 6),                    /* 16: IPv6 next header */
        JNE(0, 6, 5),                        /* 17: not TCP right away -> 23 */
        LD_ABS(BPF_B, 40 + 13),              /* 18: TCP flags */
        ALU_IMM(BPF_AND, 0, 0x12),           /* 19: SYN and ACK */
        JNE(0, 0x02, 2),                     /* 20: not SYN alone -> 23 */
        MOV_IMM(0, (int32_t)syn_queue),      /* 21 */
        EXIT(),                              /* 22 */
        MOV_IMM(0, 0),                       /* 23 */
        EXIT(),                              /* 24 */
    };
    return bpf_load(BPF_PROG_TYPE_SOCKET_FILTER, prog, sizeof prog / sizeof prog[0], log,
                    log_size);
}
