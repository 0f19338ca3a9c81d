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
 * With several queues moved by several workers (dataplane.queues > 1), the
 * second program (rt_steer_flow_load) keeps each flow on one queue: a hash
 * of its addresses and ports.  Left to the kernel (automatic queue
 * selection), a flow follows the queue the router last wrote one of its
 * packets from, and moves between queues mid-stream; packets waiting in the
 * old queue are then processed after newer ones of the new queue by the
 * other worker, and a TCP ACK that old is out of the window by then.
 *
 * The first is a socket filter of 25 instructions with no maps and no helpers:
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

int rt_steer_flow_load(char *log, uint32_t log_size)
{
    /* The flow's addresses (IPv6: their first and last words), and for TCP
     * and UDP its ports, folded into one word; the kernel takes it modulo
     * the queues.  A read past the packet ends the program with 0: queue 0. */
    const struct bpf_insn prog[] = {
        MOV_REG(6, 1),                       /*  0 */
        LD_ABS(BPF_B, 0),                    /*  1: version */
        ALU_IMM(BPF_RSH, 0, 4),              /*  2 */
        JEQ(0, 6, 18),                       /*  3: IPv6 -> 22 */
        JNE(0, 4, 34),                       /*  4: neither -> 39 */
        LD_ABS(BPF_W, 12),                   /*  5: IPv4 source */
        MOV_REG(7, 0),                       /*  6 */
        LD_ABS(BPF_W, 16),                   /*  7: destination */
        XOR_REG(7, 0),                       /*  8 */
        LD_ABS(BPF_B, 9),                    /*  9: protocol */
        JEQ(0, 6, 1),                        /* 10: TCP -> 12 */
        JNE(0, 17, 23),                      /* 11: not UDP -> 35 */
        LD_ABS(BPF_H, 6),                    /* 12: flags and fragment offset */
        ALU_IMM(BPF_AND, 0, 0x1fff),         /* 13 */
        JNE(0, 0, 20),                       /* 14: a later fragment -> 35 */
        LD_ABS(BPF_B, 0),                    /* 15 */
        ALU_IMM(BPF_AND, 0, 0xf),            /* 16 */
        ALU_IMM(BPF_LSH, 0, 2),              /* 17: IHL * 4 */
        MOV_REG(8, 0),                       /* 18 */
        LD_IND(BPF_W, 8, 0),                 /* 19: both ports */
        XOR_REG(7, 0),                       /* 20 */
        JA(13),                              /* 21 -> 35 */
        LD_ABS(BPF_W, 8),                    /* 22: IPv6 source, first word */
        MOV_REG(7, 0),                       /* 23 */
        LD_ABS(BPF_W, 20),                   /* 24: ... last word */
        XOR_REG(7, 0),                       /* 25 */
        LD_ABS(BPF_W, 24),                   /* 26: destination, first word */
        XOR_REG(7, 0),                       /* 27 */
        LD_ABS(BPF_W, 36),                   /* 28: ... last word */
        XOR_REG(7, 0),                       /* 29 */
        LD_ABS(BPF_B, 6),                    /* 30: next header */
        JEQ(0, 6, 1),                        /* 31: TCP -> 33 */
        JNE(0, 17, 2),                       /* 32: not UDP -> 35 */
        LD_ABS(BPF_W, 40),                   /* 33: both ports */
        XOR_REG(7, 0),                       /* 34 */
        MOV_REG(0, 7),                       /* 35: fold the halves */
        ALU_IMM(BPF_RSH, 0, 16),             /* 36 */
        XOR_REG(0, 7),                       /* 37 */
        EXIT(),                              /* 38 */
        MOV_IMM(0, 0),                       /* 39 */
        EXIT(),                              /* 40 */
    };
    return bpf_load(BPF_PROG_TYPE_SOCKET_FILTER, prog, sizeof prog / sizeof prog[0], log,
                    log_size);
}
