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
 * packet, the neighbour discovery messages (ICMPv6 types 133 to 137),
 * multicast listener discovery (MLD, ICMPv6 130 to 132 and 143, after the
 * hop-by-hop options that carry their router alert) and IGMP, and DHCP and
 * DHCPv6 (UDP to ports 67, 68, 546 and 547), which stay the kernel's: link
 * configuration, for the DHCP client of a WAN interface and the LAN's DHCP
 * server, and the group memberships that keep snooping switches sending the
 * router its router solicitations and DHCPv6 requests.  On the TUN device's ingress, which is where the
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
        JEQ(0, 0x0800, 22),                /*  2: IPv4 -> 25 */
        JNE(0, 0x86dd, 40),                /*  3: neither (ARP, ...) -> 44 */
        LD_ABS(BPF_B, ETH_HLEN_ + 6),      /*  4: IPv6 next header */
        JEQ(0, 17, 17),                    /*  5: UDP -> 23 */
        JEQ(0, 0, 5),                      /*  6: hop-by-hop options -> 12 */
        JNE(0, 58, 32),                    /*  7: not ICMPv6 -> 40 */
        LD_ABS(BPF_B, ETH_HLEN_ + 40),     /*  8: ICMPv6 type */
        JLT(0, 133, 30),                   /*  9: below neighbour discovery -> 40 */
        JGT(0, 137, 29),                   /* 10: above it -> 40 */
        JA(32),                            /* 11: RS, RA, NS, NA, redirect -> 44 */
        LD_ABS(BPF_B, ETH_HLEN_ + 40),     /* 12: after hop-by-hop options: */
        JNE(0, 58, 26),                    /* 13: not ICMPv6 -> 40 */
        LD_ABS(BPF_B, ETH_HLEN_ + 41),     /* 14: their length, in 8 octets */
        ALU_IMM(BPF_ADD, 0, 1),            /* 15:   not counting the first */
        ALU_IMM(BPF_LSH, 0, 3),            /* 16 */
        MOV_REG(7, 0),                     /* 17 */
        LD_IND(BPF_B, 7, ETH_HLEN_ + 40),  /* 18: ICMPv6 type */
        JEQ(0, 143, 24),                   /* 19: MLDv2 report -> 44 */
        JLT(0, 130, 19),                   /* 20: -> 40 */
        JGT(0, 132, 18),                   /* 21: -> 40 */
        JA(21),                            /* 22: MLD query, report, done -> 44 */
        LD_ABS(BPF_H, ETH_HLEN_ + 40 + 2), /* 23: UDP destination port */
        JA(11),                            /* 24 -> 36 */
        LD_ABS(BPF_B, ETH_HLEN_ + 9),      /* 25: IPv4 protocol */
        JEQ(0, 2, 17),                     /* 26: IGMP -> 44 */
        JNE(0, 17, 12),                    /* 27: not UDP -> 40 */
        LD_ABS(BPF_H, ETH_HLEN_ + 6),      /* 28: flags and fragment offset */
        ALU_IMM(BPF_AND, 0, 0x1fff),       /* 29 */
        JNE(0, 0, 9),                      /* 30: a later fragment -> 40 */
        LD_ABS(BPF_B, ETH_HLEN_),          /* 31: version and IHL */
        ALU_IMM(BPF_AND, 0, 0xf),          /* 32 */
        ALU_IMM(BPF_LSH, 0, 2),            /* 33: IHL * 4 */
        MOV_REG(7, 0),                     /* 34 */
        LD_IND(BPF_H, 7, ETH_HLEN_ + 2),   /* 35: UDP destination port */
        JEQ(0, 67, 7),                     /* 36: DHCP server -> 44 */
        JEQ(0, 68, 6),                     /* 37: DHCP client -> 44 */
        JEQ(0, 546, 5),                    /* 38: DHCPv6 client -> 44 */
        JEQ(0, 547, 4),                    /* 39: DHCPv6 server -> 44 */
        MOV_IMM(1, (int32_t)tun_ifindex),  /* 40: the router's: */
        MOV_IMM(2, 0),                     /* 41: to the TUN's egress */
        CALL(BPF_FUNC_redirect),           /* 42 */
        EXIT(),                            /* 43 */
        MOV_IMM(0, TC_ACT_OK_),            /* 44: the kernel's */
        EXIT(),                            /* 45 */
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
