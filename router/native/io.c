/*
 * io.c - the only file that makes system calls.
 *
 * A reader drains up to 'budget' packets from one TUN file descriptor into
 * its preallocated slots with read() (a TUN hands out one packet per read),
 * runs the batch through the pipeline, and writes every packet that has an
 * output interface.  Descriptors are non-blocking; EAGAIN ends the batch
 * early.  A failed write is counted on the output interface and the packet is
 * lost, as a full transmit queue would lose it.
 *
 * There are two kinds of readers.  rt_dp_poll() is called by the event loop
 * for one readable device, with the data plane's own slots.  Workers
 * (rt_workers_start) are threads, one per queue of multi-queue TUN devices:
 * worker k reads queue k of every device and writes to queue k of the output
 * device; a steering program keeps each flow on one queue of each device, a
 * hash of its addresses and ports (steer.c), so that its packets are
 * processed in the order they came.  Both run the same
 * code: read() and write(), where the time goes, happen without the lock;
 * the lock is held only while the batch is processed (the connection table,
 * NAT, counters, events and capture are shared) and while the writes'
 * results are counted.  Every other call into the data plane takes the same
 * lock (rt_dp_lock), so the control plane sees the state between batches.
 *
 * With IFF_VNET_HDR a virtio_net_hdr travels in front of every packet, in
 * both directions: it says whether the L4 checksum is still to be completed
 * (NEEDS_CSUM) and whether the packet is a GSO super-packet standing for many
 * segments.  Slots keep SLOT_HEADROOM bytes free in front of the packet, so
 * the header is read and written in the same system call as the packet, and
 * the packet is never copied.  The header's 16-bit fields are little-endian
 * (the legacy virtio layout, native on the machines this runs on).
 */
#include <endian.h>
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#include "dp.h"

#define VNET_HDR_LEN 10 /* struct virtio_net_hdr */

static uint16_t le16_at(const uint8_t *p)
{
    uint16_t v;
    memcpy(&v, p, 2);
    return le16toh(v);
}

static void put_le16(uint8_t *p, uint16_t v)
{
    v = htole16(v);
    memcpy(p, &v, 2);
}

static void vnet_decode(struct rt_pkt *p, const uint8_t *h)
{
    p->csum_flags = h[0] & (RT_PKT_NEEDS_CSUM | RT_PKT_CSUM_VALID);
    p->gso_type = h[1];
    p->hdr_len = le16_at(h + 2);
    p->gso_size = le16_at(h + 4);
    p->csum_start = le16_at(h + 6);
    p->csum_offset = le16_at(h + 8);
}

static void vnet_encode(const struct rt_pkt *p, uint8_t *h)
{
    h[0] = p->csum_flags & RT_PKT_NEEDS_CSUM;
    h[1] = p->gso_type;
    put_le16(h + 2, p->hdr_len);
    put_le16(h + 4, p->gso_size);
    put_le16(h + 6, p->csum_start);
    put_le16(h + 8, p->csum_offset);
}

/* What a reader's writes did, counted without the lock and added to the
 * data plane's counters under it. */
struct io_tx {
    uint64_t mask;                    /* interfaces with counts below */
    uint64_t packets[RT_MAX_IFACES];
    uint64_t bytes[RT_MAX_IFACES];
    uint64_t errors[RT_MAX_IFACES];
};

/* One reader: the event loop's (rt_dp_poll) or a worker's. */
struct io_ctx {
    struct rt_dp *dp;
    struct rt_pkt *pkts;   /* 'n_slots' slots */
    uint32_t n_slots;
    const int32_t *fds;    /* descriptor per interface; NULL: the tables' */
    uint32_t n_fds;        /* entries in 'fds' */
    int32_t *out_fd;       /* per slot: where the packet goes, -1 nowhere */
    uint8_t *out_vnet;     /* per slot: with a virtio_net_hdr */
    bool own_tables;       /* the reader loads the tables too: look its
                              interfaces' flags up there */
    uint64_t vnet;         /* else bit i: interface i reads with a
                              virtio_net_hdr */
    struct io_tx tx;
    struct rt_worker_stats *st; /* a worker's: lock use is measured */
    uint64_t locked_at;    /* when the lock was taken (st only) */
};

static void lock(struct rt_dp *dp)
{
    pthread_mutex_lock(&dp->lock);
}

static void unlock(struct rt_dp *dp)
{
    pthread_mutex_unlock(&dp->lock);
}

void rt_dp_lock(struct rt_dp *dp)
{
    lock(dp);
}

void rt_dp_unlock(struct rt_dp *dp)
{
    unlock(dp);
}

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void add(uint64_t *c, uint64_t v)
{
    __atomic_fetch_add(c, v, __ATOMIC_RELAXED);
}

/* The lock for a reader's batch.  A worker counts the times it had to wait
 * and the time it held the lock: what limits how far workers scale. */
static void io_lock(struct io_ctx *io)
{
    if (!io->st) {
        lock(io->dp);
        return;
    }
    if (pthread_mutex_trylock(&io->dp->lock) != 0) {
        add(&io->st->lock_waits, 1);
        lock(io->dp);
    }
    io->locked_at = mono_ns();
}

static void io_unlock(struct io_ctx *io)
{
    if (io->st)
        add(&io->st->locked_ns, mono_ns() - io->locked_at);
    unlock(io->dp);
}

/* The descriptor this reader reads and writes interface 'i' through, or
 * -1 (the tables' own for the event loop, which loads them). */
static int32_t iface_fd(const struct io_ctx *io, uint32_t i)
{
    if (io->fds)
        return i < io->n_fds ? io->fds[i] : -1;
    return i < io->dp->n_ifaces ? io->dp->ifaces[i].fd : -1;
}

/* Under the lock: decides how slot 'i' leaves (descriptor, header) and
 * captures it.  A packet with offload metadata for an interface without
 * virtio_net_hdr is dropped: all interfaces share one offload mode (see
 * tun.py), so this only happens if tables were loaded inconsistently. */
static void prepare_out(struct io_ctx *io, uint32_t i)
{
    struct rt_dp *dp = io->dp;
    struct rt_pkt *p = &io->pkts[i];
    io->out_fd[i] = -1;
    if (p->out_iface < 0)
        return;
    int32_t fd = iface_fd(io, (uint32_t)p->out_iface);
    struct dp_iface *o = &dp->ifaces[p->out_iface];
    bool vnet = o->flags & RT_IF_VNET_HDR;
    if (fd < 0 || (!vnet && (p->gso_type != RT_GSO_NONE ||
                             (p->csum_flags & RT_PKT_NEEDS_CSUM)))) {
        o->st.tx_errors++;
        dp->drops[fd < 0 ? RT_DROP_TX_ERROR : RT_DROP_BAD_OFFLOAD]++;
        return;
    }
    if (cap_on(&dp->cap, (uint32_t)p->out_iface))
        cap_push(&dp->cap, &dp->capf, (uint16_t)p->out_iface, RT_CAP_TX, p->data,
                 p->len);
    io->out_fd[i] = fd;
    io->out_vnet[i] = vnet;
}

/* Without the lock: writes slot 'i' as prepare_out() decided and counts the
 * result in io->tx. */
static void write_out(struct io_ctx *io, uint32_t i)
{
    struct rt_pkt *p = &io->pkts[i];
    int32_t fd = io->out_fd[i];
    if (fd < 0)
        return;
    uint8_t *at = p->data;
    size_t n = p->len;
    if (io->out_vnet[i]) {
        at -= VNET_HDR_LEN;
        n += VNET_HDR_LEN;
        vnet_encode(p, at);
    }
    ssize_t w;
    do {
        w = write(fd, at, n);
    } while (w < 0 && errno == EINTR);
    uint32_t o = (uint32_t)p->out_iface;
    io->tx.mask |= 1ull << o;
    if (w == (ssize_t)n) {
        io->tx.packets[o]++;
        io->tx.bytes[o] += p->len;
    } else {
        io->tx.errors[o]++;
    }
}

/* Under the lock: adds io->tx to the data plane's counters. */
static void merge_tx(struct io_ctx *io)
{
    struct rt_dp *dp = io->dp;
    uint64_t m = io->tx.mask;
    while (m) {
        uint32_t o = (uint32_t)__builtin_ctzll(m);
        m &= m - 1;
        struct rt_iface_stats *st = &dp->ifaces[o].st;
        st->tx_packets += io->tx.packets[o];
        st->tx_bytes += io->tx.bytes[o];
        st->tx_errors += io->tx.errors[o];
        dp->counters[RT_CNT_TX_PACKETS] += io->tx.packets[o];
        dp->drops[RT_DROP_TX_ERROR] += io->tx.errors[o];
        io->tx.packets[o] = io->tx.bytes[o] = io->tx.errors[o] = 0;
    }
    io->tx.mask = 0;
}

/* Counts the writes of the batch, then sends the fragments that waited for
 * their first one and were released by it, in the (now free) slots. */
static void finish_batch(struct io_ctx *io)
{
    struct rt_dp *dp = io->dp;
    struct rt_pkt plain;
    memset(&plain, 0, sizeof plain); /* no offload metadata */
    uint32_t k;
    do {
        io_lock(io);
        merge_tx(io);
        for (k = 0; k < io->n_slots; k++) {
            struct rt_pkt *p = &io->pkts[k];
            int16_t out;
            uint32_t len = rt_dp_take_ready(dp, p->data, dp->slot_size, &out);
            if (len == 0)
                break;
            uint8_t *data = p->data;
            *p = plain;
            p->data = data;
            p->len = len;
            p->cap = dp->slot_size;
            p->out_iface = out;
            prepare_out(io, k);
        }
        io_unlock(io);
        for (uint32_t i = 0; i < k; i++)
            write_out(io, i);
    } while (k > 0);
}

/* Reads up to 'budget' packets from interface 'iface' through 'fd',
 * processes and writes them; sets a bit in '*wrote' for every interface
 * written to.  Returns the packets read, or -errno if none could be. */
static int poll_one(struct io_ctx *io, uint32_t iface, int fd, uint32_t budget,
                    uint64_t now_ms, uint64_t *wrote)
{
    struct rt_dp *dp = io->dp;
    uint32_t n = 0;
    int err = 0;
    if (budget > io->n_slots)
        budget = io->n_slots;
    bool vnet = io->own_tables ? dp->ifaces[iface].flags & RT_IF_VNET_HDR
                               : (io->vnet >> iface) & 1;
    while (n < budget) {
        struct rt_pkt *p = &io->pkts[n];
        uint8_t *at = vnet ? p->data - VNET_HDR_LEN : p->data;
        size_t room = dp->slot_size + (vnet ? VNET_HDR_LEN : 0);
        ssize_t r = read(fd, at, room);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN)
                err = -errno;
            break;
        }
        if (vnet) {
            if (r < VNET_HDR_LEN)
                continue; /* cannot happen with a TUN; nothing to process */
            vnet_decode(p, at);
            r -= VNET_HDR_LEN;
        } else {
            dp_clear_offload(p);
        }
        p->len = (uint32_t)r;
        p->cap = dp->slot_size;
        p->in_iface = (uint16_t)iface;
        n++;
    }
    if (n == 0)
        return err;
    io_lock(io);
    if (iface >= dp->n_ifaces) { /* tables changed under a worker: cannot
                                     happen, workers are restarted first */
        io_unlock(io);
        return 0;
    }
    if (cap_on(&dp->cap, iface))
        for (uint32_t i = 0; i < n; i++)
            cap_push(&dp->cap, &dp->capf, (uint16_t)iface, RT_CAP_RX, io->pkts[i].data,
                     io->pkts[i].len);
    rt_dp_process(dp, io->pkts, n, now_ms);
    for (uint32_t i = 0; i < n; i++) {
        prepare_out(io, i);
        if (io->out_fd[i] >= 0)
            *wrote |= 1ull << io->pkts[i].out_iface;
    }
    io_unlock(io);
    for (uint32_t i = 0; i < n; i++)
        write_out(io, i);
    finish_batch(io);
    return (int)n;
}

/*
 * One batch from 'iface', then one batch from each interface it wrote to.
 * A write() to a TUN device runs the receiving namespace's stack in this
 * call, so an answer (an echo reply, a SYN-ACK, a TCP ACK) is often already
 * queued on the output device when the write returns: reading it now saves
 * a trip back through the event loop, which on a VM is a good part of a
 * round trip.  One level only, so a call reads at most 1 + n_ifaces
 * batches.
 */
static int poll_follow(struct io_ctx *io, uint32_t iface, uint32_t budget, uint64_t now_ms)
{
    int fd = iface_fd(io, iface);
    if (fd < 0)
        return -EBADF;
    uint64_t wrote = 0, ignored = 0;
    int r = poll_one(io, iface, fd, budget, now_ms, &wrote);
    if (r <= 0)
        return r;
    wrote &= ~(1ull << iface);
    while (wrote) {
        uint32_t o = (uint32_t)__builtin_ctzll(wrote);
        wrote &= wrote - 1;
        int ofd = iface_fd(io, o);
        if (ofd >= 0) {
            int more = poll_one(io, o, ofd, budget, now_ms, &ignored);
            if (more > 0)
                r += more;
        }
    }
    return r;
}

int rt_dp_poll(struct rt_dp *dp, uint32_t iface, uint32_t budget,
               uint64_t now_ms)
{
    if (iface >= dp->n_ifaces || dp->ifaces[iface].fd < 0)
        return -EBADF;
    /* The event loop's reader: the data plane's own slots and its tables'
     * descriptors (the thread that polls is the one that loads tables). */
    struct io_ctx *io = dp->loop_io;
    if (!io) {
        io = calloc(1, sizeof *io);
        int32_t *ofd = calloc(dp->batch, sizeof *ofd);
        uint8_t *ovnet = calloc(dp->batch, 1);
        if (!io || !ofd || !ovnet) {
            free(io);
            free(ofd);
            free(ovnet);
            return -ENOMEM;
        }
        io->dp = dp;
        io->pkts = dp->pkts;
        io->n_slots = dp->batch;
        io->out_fd = ofd;
        io->out_vnet = ovnet;
        io->own_tables = true;
        dp->loop_io = io;
    }
    return poll_follow(io, iface, budget, now_ms);
}

void io_free(struct rt_dp *dp)
{
    io_workers_stop(dp);
    if (dp->loop_io) {
        free(dp->loop_io->out_fd);
        free(dp->loop_io->out_vnet);
        free(dp->loop_io);
        dp->loop_io = NULL;
    }
}

/* -- workers ------------------------------------------------------------ */

struct io_worker {
    struct io_workers *set;
    uint32_t index;
    pthread_t thread;
    bool started;
    struct io_ctx io;
    uint8_t *slots;
    struct rt_worker_stats *st; /* dp->worker_st[index]: kept across restarts;
                                   updated with relaxed atomics */
};

struct io_workers {
    struct rt_dp *dp;
    uint32_t n, n_ifaces, budget, busy_poll_us;
    uint32_t background;       /* bit k: worker k at nice 19 */
    int stop_fd;               /* eventfd: readable once stopping */
    int32_t *fds;              /* [worker * n_ifaces + iface] */
    struct io_worker w[];
};

/*
 * A worker: sleeps in poll() on its queue of every device (and the stop
 * event), then gives each readable queue one batch, with the follow-up
 * reads of poll_follow().  With busy polling it does not sleep for
 * 'busy_poll_us' after the last packet.  A queue whose reads fail (the
 * device went away) is left out until the workers are restarted.
 */
void rt_workers_background(struct rt_dp *dp, uint32_t mask)
{
    dp->worker_background = mask; /* read when workers start, on the same thread */
}

static void *worker_main(void *arg)
{
    struct io_worker *w = arg;
    struct io_workers *set = w->set;
    if (w->index < 32 && (set->background >> w->index) & 1) /* raising nice needs no privilege */
        (void)setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), 19);
    uint32_t ni = set->n_ifaces;
    struct pollfd pfd[RT_MAX_IFACES + 1];
    for (uint32_t i = 0; i < ni; i++) {
        pfd[i].fd = w->io.fds[i];
        pfd[i].events = POLLIN;
    }
    pfd[ni].fd = set->stop_fd;
    pfd[ni].events = POLLIN;
    uint64_t last_packet = 0;
    for (;;) {
        int timeout = -1;
        bool spin = set->busy_poll_us &&
                    mono_ns() - last_packet < (uint64_t)set->busy_poll_us * 1000;
        if (spin)
            timeout = 0;
        int r = poll(pfd, ni + 1, timeout);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            add(&w->st->errors, 1);
            break;
        }
        if (pfd[ni].revents)
            break;
        if (!spin)
            add(&w->st->wakeups, 1);
        uint64_t now_ns = mono_ns();
        uint64_t now_ms = now_ns / 1000000;
        uint64_t got = 0;
        for (uint32_t i = 0; i < ni; i++) {
            if (pfd[i].fd < 0 || !(pfd[i].revents & (POLLIN | POLLERR | POLLHUP)))
                continue;
            int k = poll_follow(&w->io, i, set->budget, now_ms);
            if (k > 0) {
                got += (uint64_t)k;
                add(&w->st->batches, 1);
            } else if (k < 0) {
                add(&w->st->errors, 1);
                pfd[i].fd = -1; /* broken: do not spin on it */
            }
        }
        if (got) {
            add(&w->st->packets, got);
            add(&w->st->busy_ns, mono_ns() - now_ns);
            last_packet = now_ns;
        }
    }
    return NULL;
}

static void workers_free(struct io_workers *set)
{
    for (uint32_t k = 0; k < set->n; k++) {
        free(set->w[k].slots);
        free(set->w[k].io.pkts);
        free(set->w[k].io.out_fd);
        free(set->w[k].io.out_vnet);
    }
    if (set->stop_fd >= 0)
        close(set->stop_fd);
    free(set->fds);
    free(set);
}

void io_workers_stop(struct rt_dp *dp)
{
    struct io_workers *set = dp->workers;
    if (!set)
        return;
    uint64_t one = 1;
    ssize_t ignored = write(set->stop_fd, &one, sizeof one);
    (void)ignored;
    for (uint32_t k = 0; k < set->n; k++)
        if (set->w[k].started)
            pthread_join(set->w[k].thread, NULL);
    dp->workers = NULL;
    workers_free(set);
}

void rt_workers_stop(struct rt_dp *dp)
{
    io_workers_stop(dp);
}

int rt_workers_start(struct rt_dp *dp, uint32_t n, const int32_t *fds, uint32_t n_ifaces,
                     uint32_t budget, uint32_t busy_poll_us)
{
    if (dp->workers)
        return -EBUSY;
    if (n == 0 || n > RT_MAX_WORKERS || n_ifaces == 0 || n_ifaces > RT_MAX_IFACES ||
        budget == 0)
        return -EINVAL;
    lock(dp);
    bool same = n_ifaces == dp->n_ifaces;
    uint64_t vnet = 0; /* the offload mode is fixed while devices are open */
    for (uint32_t i = 0; i < n_ifaces && same; i++)
        if (dp->ifaces[i].flags & RT_IF_VNET_HDR)
            vnet |= 1ull << i;
    unlock(dp);
    if (!same)
        return -EINVAL;
    bool any = false; /* -1: the interface has no queue for this worker */
    for (uint32_t i = 0; i < n * n_ifaces; i++)
        any |= fds[i] >= 0;
    if (!any)
        return -EBADF;
    if (budget > dp->batch)
        budget = dp->batch;
    struct io_workers *set = calloc(1, sizeof *set + n * sizeof set->w[0]);
    if (!set)
        return -ENOMEM;
    set->dp = dp;
    set->n = n;
    set->n_ifaces = n_ifaces;
    set->budget = budget;
    set->busy_poll_us = busy_poll_us;
    set->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    set->fds = malloc(sizeof *fds * n * n_ifaces);
    if (set->stop_fd < 0 || !set->fds) {
        workers_free(set);
        return -ENOMEM;
    }
    memcpy(set->fds, fds, sizeof *fds * n * n_ifaces);
    set->background = dp->worker_background;
    size_t stride = SLOT_HEADROOM + dp->slot_size;
    for (uint32_t k = 0; k < n; k++) {
        struct io_worker *w = &set->w[k];
        w->set = set;
        w->index = k;
        w->st = &dp->worker_st[k];
        w->slots = malloc(budget * stride);
        w->io.pkts = calloc(budget, sizeof *w->io.pkts);
        w->io.out_fd = calloc(budget, sizeof *w->io.out_fd);
        w->io.out_vnet = calloc(budget, 1);
        if (!w->slots || !w->io.pkts || !w->io.out_fd || !w->io.out_vnet) {
            workers_free(set);
            return -ENOMEM;
        }
        for (uint32_t i = 0; i < budget; i++) {
            w->io.pkts[i].data = w->slots + i * stride + SLOT_HEADROOM;
            w->io.pkts[i].cap = dp->slot_size;
        }
        w->io.dp = dp;
        w->io.n_slots = budget;
        w->io.fds = set->fds + (size_t)k * n_ifaces;
        w->io.n_fds = n_ifaces;
        w->io.vnet = vnet;
        w->io.st = w->st;
    }
    /* Signals stay with the threads that handle them: workers block all. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int err = 0;
    for (uint32_t k = 0; k < n && !err; k++) {
        err = pthread_create(&set->w[k].thread, NULL, worker_main, &set->w[k]);
        set->w[k].started = err == 0;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    dp->workers = set;
    if (err) {
        io_workers_stop(dp);
        return -err;
    }
    return 0;
}

uint32_t rt_workers_count(const struct rt_dp *dp)
{
    return dp->workers ? dp->workers->n : 0;
}

int rt_workers_stats(const struct rt_dp *dp, uint32_t k, struct rt_worker_stats *out)
{
    const struct io_workers *set = dp->workers;
    if (!set || k >= set->n)
        return -1;
    const struct rt_worker_stats *st = &dp->worker_st[k];
    out->packets = __atomic_load_n(&st->packets, __ATOMIC_RELAXED);
    out->batches = __atomic_load_n(&st->batches, __ATOMIC_RELAXED);
    out->wakeups = __atomic_load_n(&st->wakeups, __ATOMIC_RELAXED);
    out->errors = __atomic_load_n(&st->errors, __ATOMIC_RELAXED);
    out->lock_waits = __atomic_load_n(&st->lock_waits, __ATOMIC_RELAXED);
    out->locked_ns = __atomic_load_n(&st->locked_ns, __ATOMIC_RELAXED);
    out->busy_ns = __atomic_load_n(&st->busy_ns, __ATOMIC_RELAXED);
    return 0;
}
