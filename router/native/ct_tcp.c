/*
 * ct_tcp.c - TCP connection tracking: the state machine of Linux's
 * nf_conntrack_proto_tcp, with the same state names and default timeouts.
 *
 * Theory of operation.  We are the man in the middle: we see both
 * directions but cannot know whether a packet reached its destination.  A
 * packet is put in a flag class (RST > SYN(+ACK) > FIN > ACK > none, in that
 * order of priority) and the new state is read from the table below, indexed
 * by [direction][flag class][old state].  Two pseudo-states remove most of
 * the branching: sIV marks a packet that cannot be part of the connection
 * (it is INVALID and dropped) and sIG one that may or may not be valid (it
 * passes, but changes neither state nor timer).  The code after the lookup
 * only handles the exceptions: re-opening a closed tuple (RFC 1122 4.2.2.13),
 * killing an entry whose only answer was a RST, and ASSURED.
 *
 * A packet that passes the table must also fit the sequence windows both
 * ends announced (tcp_in_window below), or it is INVALID: that is what
 * keeps a blind attacker from injecting data or a RST into a connection.
 */
#include "ct_proto.h"
#include "wire.h"

#include <string.h>

#define sNO RT_TCP_NONE
#define sSS RT_TCP_SYN_SENT
#define sSR RT_TCP_SYN_RECV
#define sES RT_TCP_ESTABLISHED
#define sFW RT_TCP_FIN_WAIT
#define sCW RT_TCP_CLOSE_WAIT
#define sLA RT_TCP_LAST_ACK
#define sTW RT_TCP_TIME_WAIT
#define sCL RT_TCP_CLOSE
#define sS2 RT_TCP_SYN_SENT2
#define sIV CT_TCP_INVALID
#define sIG CT_TCP_IGNORE

enum { F_SYN, F_SYNACK, F_FIN, F_ACK, F_RST, F_NONE, F_CLASSES };
#define CT_TCP_CLASS_ACK F_ACK

unsigned ct_tcp_flag_class(uint8_t flags)
{
    if (flags & TCP_RST)
        return F_RST;
    if (flags & TCP_SYN)
        return (flags & TCP_ACK) ? F_SYNACK : F_SYN;
    if (flags & TCP_FIN)
        return F_FIN;
    if (flags & TCP_ACK)
        return F_ACK;
    return F_NONE;
}

static const uint8_t tcp_transitions[CT_DIRS][F_CLASSES][RT_TCP_N_STATES] = {
    [CT_DIR_ORIGINAL] = {
        /*            sNO  sSS  sSR  sES  sFW  sCW  sLA  sTW  sCL  sS2 */
        /* A SYN opens; retransmitted SYNs keep SYN_SENT; in TIME_WAIT or
         * CLOSE it re-opens the tuple; mid-connection it may be a stale
         * retransmission, so it is ignored rather than judged. */
        [F_SYN] =    {sSS, sSS, sIG, sIG, sIG, sIG, sIG, sSS, sSS, sS2},
        /* The client never sends SYN/ACK, except in a simultaneous open
         * (answering the other side's SYN from SYN_SENT2). */
        [F_SYNACK] = {sIV, sIV, sSR, sIV, sIV, sIV, sIV, sIV, sIV, sSR},
        /* A FIN starts (FIN_WAIT) or completes (LAST_ACK) the close; before
         * the handshake completed it is not believable. */
        [F_FIN] =    {sIV, sIV, sFW, sFW, sLA, sLA, sLA, sTW, sCL, sIV},
        /* The third packet of the handshake establishes; an ACK with no
         * connection is a mid-stream pickup (when allowed); an ACK in
         * SYN_SENT cannot be, no SYN/ACK was seen. */
        [F_ACK] =    {sES, sIV, sES, sES, sCW, sCW, sTW, sTW, sCL, sIV},
        /* A RST closes from any state. */
        [F_RST] =    {sIV, sCL, sCL, sCL, sCL, sCL, sCL, sCL, sCL, sCL},
        /* No flag at all is never valid. */
        [F_NONE] =   {sIV, sIV, sIV, sIV, sIV, sIV, sIV, sIV, sIV, sIV},
    },
    [CT_DIR_REPLY] = {
        /*            sNO  sSS  sSR  sES  sFW  sCW  sLA  sTW  sCL  sS2 */
        /* A SYN from the server is a simultaneous open (SYN_SENT2), or in
         * TIME_WAIT a re-open with the roles switched. */
        [F_SYN] =    {sIV, sS2, sIV, sIV, sIV, sIV, sIV, sSS, sIV, sS2},
        /* The standard answer to the SYN; later ones are retransmissions
         * or answers to ignored SYNs, so they are ignored. */
        [F_SYNACK] = {sIV, sSR, sIG, sIG, sIG, sIG, sIG, sIG, sIG, sSR},
        /* Same as the original direction. */
        [F_FIN] =    {sIV, sIV, sFW, sFW, sLA, sLA, sLA, sTW, sCL, sIV},
        /* An ACK in SYN_SENT may belong to a half-open connection the
         * server still holds: ignore it. */
        [F_ACK] =    {sIV, sIG, sSR, sES, sCW, sCW, sTW, sTW, sCL, sIG},
        [F_RST] =    {sIV, sCL, sCL, sCL, sCL, sCL, sCL, sCL, sCL, sCL},
        [F_NONE] =   {sIV, sIV, sIV, sIV, sIV, sIV, sIV, sIV, sIV, sIV},
    },
};

uint8_t ct_tcp_transition(unsigned dir, unsigned cls, unsigned state)
{
    if (dir >= CT_DIRS || cls >= F_CLASSES || state >= RT_TCP_N_STATES)
        return sIV;
    return tcp_transitions[dir][cls][state];
}

/* State -> timeout, in the order of enum rt_tcp_state. */
static const enum rt_timeout tcp_state_timeouts[RT_TCP_N_STATES] = {
    [sNO] = RT_TO_TCP_CLOSE,
    [sSS] = RT_TO_TCP_SYN_SENT,
    [sSR] = RT_TO_TCP_SYN_RECV,
    [sES] = RT_TO_TCP_ESTABLISHED,
    [sFW] = RT_TO_TCP_FIN_WAIT,
    [sCW] = RT_TO_TCP_CLOSE_WAIT,
    [sLA] = RT_TO_TCP_LAST_ACK,
    [sTW] = RT_TO_TCP_TIME_WAIT,
    [sCL] = RT_TO_TCP_CLOSE,
    [sS2] = RT_TO_TCP_SYN_SENT2,
};

/*
 * Flag combinations a TCP segment may carry (PSH, ECE and CWR aside), as in
 * Linux's tcp_valid_flags[].  Anything else (SYN|FIN, no flag, ...) is
 * INVALID whatever the state.
 */
static bool tcp_flags_valid(uint8_t flags)
{
    switch (flags & (TCP_FIN | TCP_SYN | TCP_RST | TCP_ACK | TCP_URG)) {
    case TCP_SYN:
    case TCP_SYN | TCP_URG:
    case TCP_SYN | TCP_ACK:
    case TCP_RST:
    case TCP_RST | TCP_ACK:
    case TCP_FIN | TCP_ACK:
    case TCP_FIN | TCP_ACK | TCP_URG:
    case TCP_ACK:
    case TCP_ACK | TCP_URG:
        return true;
    default:
        return false;
    }
}

/* Serial-number comparisons (RFC 1982): a before b. */
static inline bool seq_before(uint32_t a, uint32_t b) { return (int32_t)(a - b) < 0; }
static inline bool seq_after(uint32_t a, uint32_t b) { return (int32_t)(b - a) < 0; }

#define TCPOPT_EOL 0
#define TCPOPT_NOP 1
#define TCPOPT_WSCALE 3
#define TCPOPT_SACK_PERM 4
#define TCPOPT_SACK 5
#define TCP_MAX_WSCALE 14 /* RFC 7323 2.3 */
/* Lower bound of acknowledgements: how far below the receiver's end an ACK
 * may fall (Linux's MAXACKWINCONST). */
#define MAXACKWINCONST 66000

/* What the options of a segment said.  A malformed option list ends the
 * walk: only what could be read is used (the header length itself was
 * checked by the parser, so the walk never leaves the header). */
struct tcp_opt_seen {
    int wscale;          /* -1 if absent */
    bool sack_perm;
    bool have_sack;
    uint32_t sack_right; /* highest right edge of the SACK blocks */
};

static void tcp_options(const struct pkt_meta *m, uint32_t ack,
                        struct tcp_opt_seen *o)
{
    o->wscale = -1;
    o->sack_perm = false;
    o->have_sack = false;
    o->sack_right = ack;
    const uint8_t *opt = m->data + m->l4_off + TCP_HDR_MIN;
    uint32_t n = m->l4_hdr_len > TCP_HDR_MIN
                     ? (uint32_t)m->l4_hdr_len - TCP_HDR_MIN
                     : 0u;
    uint32_t i = 0;
    while (i < n) {
        uint8_t kind = opt[i];
        if (kind == TCPOPT_EOL)
            break;
        if (kind == TCPOPT_NOP) {
            i++;
            continue;
        }
        if (i + 2 > n || opt[i + 1] < 2 || i + opt[i + 1] > n)
            break;
        uint8_t len = opt[i + 1];
        if (kind == TCPOPT_WSCALE && len == 3)
            o->wscale = opt[i + 2] > TCP_MAX_WSCALE ? TCP_MAX_WSCALE : opt[i + 2];
        else if (kind == TCPOPT_SACK_PERM && len == 2)
            o->sack_perm = true;
        else if (kind == TCPOPT_SACK && len >= 10 && (len - 2) % 8 == 0) {
            for (uint32_t b = i + 2; b + 8 <= i + len; b += 8) {
                uint32_t right = wire_h32(opt + b + 4);
                o->have_sack = true;
                if (seq_after(right, o->sack_right))
                    o->sack_right = right;
            }
        }
        i += len;
    }
}

/* Records the SYN options of the sender 'd'. */
static void take_syn_options(struct ct_tcp_win *w, unsigned d,
                             const struct tcp_opt_seen *o)
{
    w->flags[d] &= (uint8_t)~(CT_TCPF_WINDOW_SCALE | CT_TCPF_SACK_PERM);
    w->scale[d] = 0;
    if (o->wscale >= 0) {
        w->scale[d] = (uint8_t)o->wscale;
        w->flags[d] |= CT_TCPF_WINDOW_SCALE;
    }
    if (o->sack_perm)
        w->flags[d] |= CT_TCPF_SACK_PERM;
}

/* Sequence space a segment occupies: its data, plus one for SYN and FIN. */
static uint32_t segment_end(const struct pkt_meta *m)
{
    uint32_t data = m->l4_len - m->l4_hdr_len;
    return m->tcp_seq + data + ((m->tcp_flags & TCP_SYN) ? 1u : 0u) +
           ((m->tcp_flags & TCP_FIN) ? 1u : 0u);
}

/* l4_flags of struct ct_conn, for TCP: the direction of the last
 * acknowledgement, whether its window was zero, and how many times in a row
 * it was repeated exactly (saturating). */
#define L4F_RETRANS_MASK 0x0f
#define L4F_LAST_DIR 0x10
#define L4F_LAST_WIN0 0x20

static uint32_t ack_signature(uint32_t seq, uint32_t ack, uint32_t end,
                              uint32_t win)
{
    uint64_t h = ((uint64_t)seq << 32 | ack) * 0x9e3779b97f4a7c15ull;
    h ^= ((uint64_t)end << 32 | win) * 0xc2b2ae3d27d4eb4full;
    return (uint32_t)(h >> 32) ^ (uint32_t)h;
}

/*
 * Linux's tcp_in_window(): is the segment 'm', sent in direction 'dir',
 * inside what the two ends have said they would accept?  The four bounds,
 * with sender S and receiver R:
 *   I   seq <= S.maxend                  (not beyond what R allowed)
 *   II  end >= S.end - R.maxwin          (not older than a window back)
 *   III ack <= R.end                     (acknowledges nothing unsent)
 *   IV  ack >= R.end - max(S.maxwin, 66000)  (not an ancient ACK)
 * with the SACK right edge in place of ack when SACK was permitted.  When
 * it fits, the state moves forward.  Returns true if the packet may pass.
 */
static bool tcp_in_window(struct ct_conn *c, struct ct_tcp_win *w,
                          const struct pkt_meta *m, unsigned dir,
                          unsigned cls, const struct ct_params *p)
{
    unsigned s = dir, r = !dir;
    /* A first fragment is checked like any segment, with the data it holds
     * (the rest follows in later fragments, which never come here): its
     * sequence and acknowledgement numbers are all a blind attacker needs
     * to get right, so they must fit as for a whole segment. */
    uint8_t flags = m->tcp_flags;
    uint32_t seq = m->tcp_seq, ack = m->tcp_ack, sack = ack;
    uint32_t win = m->tcp_win;
    uint32_t end = segment_end(m);
    struct tcp_opt_seen o = {.wscale = -1, .sack_right = ack};
    bool want_opts = (flags & TCP_SYN) ||
                     ((w->flags[r] & CT_TCPF_SACK_PERM) &&
                      m->l4_hdr_len > TCP_HDR_MIN);
    if (want_opts) {
        tcp_options(m, ack, &o);
        if (w->flags[r] & CT_TCPF_SACK_PERM)
            sack = o.sack_right;
    }

    if (w->maxwin[s] == 0) {
        /* First packet seen from this side. */
        if (flags & TCP_SYN) {
            /* The SYN, or the SYN/ACK answering it. */
            w->end[s] = w->maxend[s] = end;
            w->maxwin[s] = win ? win : 1;
            take_syn_options(w, s, &o);
            /* RFC 7323 2.2: scaling only when both sides offered it. */
            if (!((w->flags[s] & CT_TCPF_WINDOW_SCALE) &&
                  (w->flags[r] & CT_TCPF_WINDOW_SCALE)))
                w->scale[s] = w->scale[r] = 0;
            if (!(flags & TCP_ACK))
                return true; /* a SYN of a simultaneous open */
        } else {
            /* Picked up mid-stream: learn from the packet. */
            w->end[s] = end;
            uint32_t swin = win << w->scale[s];
            w->maxwin[s] = swin ? swin : 1;
            w->maxend[s] = end + w->maxwin[s];
            if (w->maxwin[r] == 0) {
                /* Nothing seen the other way: let III and IV pass. */
                w->end[r] = w->maxend[r] = sack;
            } else if (sack == w->end[r] + 1) {
                w->end[r]++; /* the answer to a keepalive */
            }
        }
    } else if ((flags & TCP_SYN) && seq_after(end, w->end[s]) &&
               (c->state == RT_TCP_SYN_SENT || c->state == RT_TCP_SYN_RECV)) {
        /* A new SYN (or SYN/ACK) with a higher sequence number: the end
         * restarted (RFC 793 "reinitialized"); start over from it. */
        w->end[s] = w->maxend[s] = end;
        w->maxwin[s] = win ? win : 1;
        take_syn_options(w, s, &o);
    }

    if (!(flags & TCP_ACK)) {
        ack = sack = w->end[r]; /* no ACK: it cannot be wrong */
    } else if ((flags & TCP_RST) && ack == 0) {
        ack = sack = w->end[r]; /* RST|ACK with a zero ack: broken stacks */
    }
    if ((flags & TCP_RST) && seq == 0 && c->state == RT_TCP_SYN_SENT)
        seq = end = w->end[s]; /* RST answering a SYN, with seq 0 */

    uint32_t maxack = w->maxwin[s] > MAXACKWINCONST ? w->maxwin[s]
                                                    : MAXACKWINCONST;
    bool in_recv_win = w->maxwin[r] == 0 ||
                       seq_after(end, w->end[s] - w->maxwin[r] - 1);
    if (seq_before(seq, w->maxend[s] + 1) && in_recv_win &&
        seq_before(sack, w->end[r] + 1) &&
        seq_after(sack, w->end[r] - maxack - 1)) {
        if (!(flags & TCP_SYN))
            win <<= w->scale[s];
        uint32_t swin = win + (sack - ack);
        if (w->maxwin[s] < swin)
            w->maxwin[s] = swin;
        if (seq_after(end, w->end[s])) {
            w->end[s] = end;
            w->flags[s] |= CT_TCPF_DATA_UNACK;
        }
        if (w->maxwin[r] != 0 && seq_after(end, w->maxend[s]))
            w->maxwin[r] += end - w->maxend[s];
        if (seq_after(sack + win, w->maxend[r] - 1)) {
            w->maxend[r] = sack + win;
            if (win == 0)
                w->maxend[r]++;
        }
        if (ack == w->end[r])
            w->flags[r] &= (uint8_t)~CT_TCPF_DATA_UNACK;
        if (flags & TCP_ACK) {
            /* The highest acknowledgement S sent: where R's next segment,
             * and so a genuine RST from R, starts (RFC 5961 3.2). */
            if (!(w->flags[s] & CT_TCPF_MAXACK_SET) || seq_after(ack, w->maxack[s]))
                w->maxack[s] = ack;
            w->flags[s] |= CT_TCPF_MAXACK_SET;
        }
        if (cls == CT_TCP_CLASS_ACK) {
            /* Count exact repetitions of the last acknowledgement. */
            uint32_t sig = ack_signature(seq, ack, end, win);
            unsigned last_dir = (c->l4_flags & L4F_LAST_DIR) ? 1u : 0u;
            if (last_dir == dir && sig == w->last_sig) {
                if ((c->l4_flags & L4F_RETRANS_MASK) != L4F_RETRANS_MASK)
                    c->l4_flags++;
            } else {
                w->last_sig = sig;
                c->l4_flags = (uint8_t)((dir ? L4F_LAST_DIR : 0) |
                                        (win == 0 ? L4F_LAST_WIN0 : 0));
            }
        }
        return true;
    }
    return p->tcp_liberal || (w->flags[s] & CT_TCPF_BE_LIBERAL);
}

static bool tcp_new(struct ct_conn *c, struct ct_tcp_win *w,
                    const struct pkt_meta *m, const struct ct_params *p)
{
    if (!tcp_flags_valid(m->tcp_flags))
        return false;
    uint8_t s = tcp_transitions[CT_DIR_ORIGINAL]
                               [ct_tcp_flag_class(m->tcp_flags)][sNO];
    if (s == sIV || s == sIG)
        return false;
    if (s == sES && !p->tcp_loose)
        return false;  /* mid-stream pickup disabled */
    c->state = sNO;
    memset(w, 0, sizeof *w);
    if (s == sES) {
        /* As Linux: a picked-up connection's windows are unknown (its
         * window scale above all), so both directions are liberal. */
        w->flags[0] = w->flags[1] = CT_TCPF_SACK_PERM | CT_TCPF_BE_LIBERAL;
        return true;
    }
    /* The SYN: the sender's side starts here, with its options; whether
     * scaling is used is decided when the SYN/ACK shows the other side's. */
    struct tcp_opt_seen o;
    tcp_options(m, m->tcp_ack, &o);
    w->end[0] = w->maxend[0] = segment_end(m);
    w->maxwin[0] = m->tcp_win ? m->tcp_win : 1;
    take_syn_options(w, 0, &o);
    return true;
}

static enum ct_verdict tcp_update(struct ct_conn *c, struct ct_tcp_win *w,
                                  const struct pkt_meta *m, enum ct_dir dir,
                                  const struct ct_params *p, uint64_t now_ms)
{
    if (!tcp_flags_valid(m->tcp_flags))
        return CT_INVALID;
    unsigned cls = ct_tcp_flag_class(m->tcp_flags);
    uint8_t old = c->state;
    uint8_t new_ = tcp_transitions[dir][cls][old];

    if (new_ == sIV)
        return CT_INVALID;
    if (new_ == sIG)
        return CT_IGNORE;
    if (new_ == sSS && (old == sTW || old == sCL))
        return CT_REOPEN;  /* delete and look the packet up again */

    /* RFC 5961 3.2, as Linux: a RST before what the other side has
     * acknowledged is invalid; in an established connection, one that is
     * not exactly there (nor right after the sender's own last segment)
     * passes, so that the receiver answers it with a challenge ACK, but
     * changes neither state nor timer.  Only the exact sequence number
     * closes: a blind attacker must hit it, not just the window. */
    bool challenge = false;
    if (cls == F_RST && (w->flags[!dir] & CT_TCPF_MAXACK_SET)) {
        uint32_t expect = w->maxack[!dir];
        if (seq_before(m->tcp_seq, expect))
            return CT_BAD_RST;
        challenge = old == sES && (c->status & CT_ASSURED) && m->tcp_seq != expect &&
                    m->tcp_seq != w->end[dir];
    }

    if (!tcp_in_window(c, w, m, dir, cls, p))
        return (m->tcp_flags & TCP_RST) ? CT_BAD_RST : CT_OUT_OF_WINDOW;
    if (challenge)
        return CT_ACCEPT;

    bool seen_reply = (c->status & CT_SEEN_REPLY) != 0;
    if (cls == F_RST && !seen_reply)
        return CT_KILL;  /* the only answer was a RST: nothing to keep */

    c->state = new_;
    bool replied = seen_reply || dir == CT_DIR_REPLY;
    if (new_ == sES && (old == sSR || (old == sES && replied)))
        c->status |= CT_ASSURED;

    /* Linux's order: repeated retransmissions, RST, unacknowledged data, a
     * zero window, then the state's own timeout; the special ones only
     * ever shorten it. */
    uint64_t t = p->timeout_ms[tcp_state_timeouts[new_]];
    uint64_t retrans_t = p->timeout_ms[RT_TO_TCP_RETRANS];
    uint64_t unack_t = p->timeout_ms[RT_TO_TCP_UNACK];
    if ((c->l4_flags & L4F_RETRANS_MASK) >= p->tcp_max_retrans &&
        t > retrans_t)
        t = retrans_t;
    else if (cls == F_RST)
        t = p->timeout_ms[RT_TO_TCP_CLOSE];
    else if (((w->flags[0] | w->flags[1]) & CT_TCPF_DATA_UNACK) && t > unack_t)
        t = unack_t;
    else if ((c->l4_flags & L4F_LAST_WIN0) && t > retrans_t)
        t = retrans_t;
    /* A picked-up connection nobody answered does not get 5 days. */
    if (!replied && t > unack_t)
        t = unack_t;
    ct_set_timeout(c, now_ms, t);
    return CT_ACCEPT;
}

const struct ct_l4_proto ct_proto_tcp = {
    .new_conn = tcp_new,
    .update = tcp_update,
};
