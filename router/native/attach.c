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
 * router its router solicitations and DHCPv6 requests; on a LAN link,
 * multicast as well (SSDP, mDNS).  On the TUN device's ingress, which is where the
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

int rt_attach_ingress_load(uint32_t tun_ifindex, uint32_t lan, char *log, uint32_t log_size)
{
    /* LD_ABS reads from the Ethernet header (a tc program at ingress sees
     * the frame); a read past the packet ends the program with 0, TC_ACT_OK:
     * the kernel's.  Jump offsets count from the next instruction.  On a LAN
     * link ('lan'), multicast (IPv4 224/4 and above, IPv6 ff00::/8) is the
     * kernel's too: SSDP discovery of the router's UPnP device and mDNS;
     * elsewhere the compared values are ones no byte can have. */
    const int32_t mc4 = lan ? 223 : 0x100;  /* IPv4: first byte above it */
    const int32_t mc6 = lan ? 0xff : 0x100; /* IPv6: first byte equal to it */
    const struct bpf_insn prog[] = {
        MOV_REG(6, 1),                     /*  0: LD_ABS wants the skb in r6 */
        LD_ABS(BPF_H, 12),                 /*  1: EtherType */
        JEQ(0, 0x0800, 24),                /*  2: IPv4 -> 27 */
        JNE(0, 0x86dd, 44),                /*  3: neither (ARP, ...) -> 48 */
        LD_ABS(BPF_B, ETH_HLEN_ + 24),     /*  4: IPv6 destination, first byte */
        JEQ(0, mc6, 42),                   /*  5: LAN multicast -> 48 */
        LD_ABS(BPF_B, ETH_HLEN_ + 6),      /*  6: IPv6 next header */
        JEQ(0, 17, 17),                    /*  7: UDP -> 25 */
        JEQ(0, 0, 5),                      /*  8: hop-by-hop options -> 14 */
        JNE(0, 58, 34),                    /*  9: not ICMPv6 -> 44 */
        LD_ABS(BPF_B, ETH_HLEN_ + 40),     /* 10: ICMPv6 type */
        JLT(0, 133, 32),                   /* 11: below neighbour discovery -> 44 */
        JGT(0, 137, 31),                   /* 12: above it -> 44 */
        JA(34),                            /* 13: RS, RA, NS, NA, redirect -> 48 */
        LD_ABS(BPF_B, ETH_HLEN_ + 40),     /* 14: after hop-by-hop options: */
        JNE(0, 58, 28),                    /* 15: not ICMPv6 -> 44 */
        LD_ABS(BPF_B, ETH_HLEN_ + 41),     /* 16: their length, in 8 octets */
        ALU_IMM(BPF_ADD, 0, 1),            /* 17:   not counting the first */
        ALU_IMM(BPF_LSH, 0, 3),            /* 18 */
        MOV_REG(7, 0),                     /* 19 */
        LD_IND(BPF_B, 7, ETH_HLEN_ + 40),  /* 20: ICMPv6 type */
        JEQ(0, 143, 26),                   /* 21: MLDv2 report -> 48 */
        JLT(0, 130, 21),                   /* 22: -> 44 */
        JGT(0, 132, 20),                   /* 23: -> 44 */
        JA(23),                            /* 24: MLD query, report, done -> 48 */
        LD_ABS(BPF_H, ETH_HLEN_ + 40 + 2), /* 25: UDP destination port */
        JA(13),                            /* 26 -> 40 */
        LD_ABS(BPF_B, ETH_HLEN_ + 16),     /* 27: IPv4 destination, first byte */
        JGT(0, mc4, 19),                   /* 28: LAN multicast, broadcast -> 48 */
        LD_ABS(BPF_B, ETH_HLEN_ + 9),      /* 29: IPv4 protocol */
        JEQ(0, 2, 17),                     /* 30: IGMP -> 48 */
        JNE(0, 17, 12),                    /* 31: not UDP -> 44 */
        LD_ABS(BPF_H, ETH_HLEN_ + 6),      /* 32: flags and fragment offset */
        ALU_IMM(BPF_AND, 0, 0x1fff),       /* 33 */
        JNE(0, 0, 9),                      /* 34: a later fragment -> 44 */
        LD_ABS(BPF_B, ETH_HLEN_),          /* 35: version and IHL */
        ALU_IMM(BPF_AND, 0, 0xf),          /* 36 */
        ALU_IMM(BPF_LSH, 0, 2),            /* 37: IHL * 4 */
        MOV_REG(7, 0),                     /* 38 */
        LD_IND(BPF_H, 7, ETH_HLEN_ + 2),   /* 39: UDP destination port */
        JEQ(0, 67, 7),                     /* 40: DHCP server -> 48 */
        JEQ(0, 68, 6),                     /* 41: DHCP client -> 48 */
        JEQ(0, 546, 5),                    /* 42: DHCPv6 client -> 48 */
        JEQ(0, 547, 4),                    /* 43: DHCPv6 server -> 48 */
        MOV_IMM(1, (int32_t)tun_ifindex),  /* 44: the router's: */
        MOV_IMM(2, 0),                     /* 45: to the TUN's egress */
        CALL(BPF_FUNC_redirect),           /* 46 */
        EXIT(),                            /* 47 */
        MOV_IMM(0, TC_ACT_OK_),            /* 48: the kernel's */
        EXIT(),                            /* 49 */
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
