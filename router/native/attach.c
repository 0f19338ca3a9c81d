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
 * packet, the neighbour discovery messages (ICMPv6 types 133 to 137), and
 * DHCP and DHCPv6 (UDP to ports 67, 68, 546 and 547), which stay the
 * kernel's: link configuration, for the DHCP client of a WAN interface and
 * the LAN's DHCP server.  On the TUN device's ingress, which is where the
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
#include <stddef.h>
#include "bpf.h"
#include "rt.h"

#define ETH_HLEN_ 14
#define TC_ACT_OK_ 0
#define TC_ACT_SHOT_ 2

static int load(const struct bpf_insn *prog, uint32_t n, char *log, uint32_t log_size)
{
    return bpf_load(BPF_PROG_TYPE_SCHED_CLS, prog, n, log, log_size);
}

int rt_attach_ingress_load(uint32_t tun_ifindex, char *log, uint32_t log_size)
{
    /* LD_ABS reads from the Ethernet header (a tc program at ingress sees
     * the frame); a read past the packet ends the program with 0, TC_ACT_OK:
     * the kernel's.  Jump offsets count from the next instruction. */
    const struct bpf_insn prog[] = {
        MOV_REG(6, 1),                     /*  0: LD_ABS wants the skb in r6 */
        LD_ABS(BPF_H, 12),                 /*  1: EtherType */
        JEQ(0, 0x0800, 10),                /*  2: IPv4 -> 13 */
        JNE(0, 0x86dd, 27),                /*  3: neither (ARP, ...) -> 31 */
        LD_ABS(BPF_B, ETH_HLEN_ + 6),      /*  4: IPv6 next header */
        JEQ(0, 17, 5),                     /*  5: UDP -> 11 */
        JNE(0, 58, 20),                    /*  6: not ICMPv6 -> 27 */
        LD_ABS(BPF_B, ETH_HLEN_ + 40),     /*  7: ICMPv6 type */
        JLT(0, 133, 18),                   /*  8: below neighbour discovery -> 27 */
        JGT(0, 137, 17),                   /*  9: above it -> 27 */
        JA(20),                            /* 10: RS, RA, NS, NA, redirect -> 31 */
        LD_ABS(BPF_H, ETH_HLEN_ + 40 + 2), /* 11: UDP destination port */
        JA(10),                            /* 12 -> 23 */
        LD_ABS(BPF_B, ETH_HLEN_ + 9),      /* 13: IPv4 protocol */
        JNE(0, 17, 12),                    /* 14: not UDP -> 27 */
        LD_ABS(BPF_H, ETH_HLEN_ + 6),      /* 15: flags and fragment offset */
        ALU_IMM(BPF_AND, 0, 0x1fff),       /* 16 */
        JNE(0, 0, 9),                      /* 17: a later fragment -> 27 */
        LD_ABS(BPF_B, ETH_HLEN_),          /* 18: version and IHL */
        ALU_IMM(BPF_AND, 0, 0xf),          /* 19 */
        ALU_IMM(BPF_LSH, 0, 2),            /* 20: IHL * 4 */
        MOV_REG(7, 0),                     /* 21 */
        LD_IND(BPF_H, 7, ETH_HLEN_ + 2),   /* 22: UDP destination port */
        JEQ(0, 67, 7),                     /* 23: DHCP server -> 31 */
        JEQ(0, 68, 6),                     /* 24: DHCP client -> 31 */
        JEQ(0, 546, 5),                    /* 25: DHCPv6 client -> 31 */
        JEQ(0, 547, 4),                    /* 26: DHCPv6 server -> 31 */
        MOV_IMM(1, (int32_t)tun_ifindex),  /* 27: the router's: */
        MOV_IMM(2, 0),                     /* 28: to the TUN's egress */
        CALL(BPF_FUNC_redirect),           /* 29 */
        EXIT(),                            /* 30 */
        MOV_IMM(0, TC_ACT_OK_),            /* 31: the kernel's */
        EXIT(),                            /* 32 */
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
