/* The C side of deeprc-comm's `ucx` backend: a thin layer over UCP (UCX's
 * protocol layer, Debian's libucx-dev 1.13) with plain types, so the Rust
 * side declares a dozen functions instead of binding UCX's headers.
 *
 * One context and one worker per rank, in single-thread mode: every call
 * but ducx_signal comes from the rank's progress thread (or from the thread
 * that creates the rank, before the progress thread starts). Messages are
 * tag-matched: the tag carries the sender's rank, and a message is a header
 * and a body sent as one I/O vector, received whole after a probe.
 *
 * Return codes: 0 done, 1 in progress (a request was returned), negative a
 * ucs_status_t error (ducx_status_string names it). */

#include <poll.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <ucp/api/ucp.h>

typedef struct ducx {
    ucp_context_h context;
    ucp_worker_h worker;
    int efd;
} ducx_t;

const char *ducx_status_string(int status) {
    return ucs_status_string((ucs_status_t)status);
}

/* Defaults that differ from UCX's, unless the user's environment sets
 * them: tcp segments of 64 KiB instead of 8 KiB (1.5-2.6x the all-to-all
 * bandwidth between namespace hosts, docs/benchmarks.md). UCX applies a
 * modified key to every transport whose table has it without its prefix:
 * `TX_SEG_SIZE` reaches the tcp interfaces (`TCP_TX_SEG_SIZE` would be
 * ignored with a warning). */
static void tune(ucp_config_t *config) {
    static const char *defaults[][3] = {
        {"UCX_TCP_TX_SEG_SIZE", "TX_SEG_SIZE", "64k"},
        {"UCX_TCP_RX_SEG_SIZE", "RX_SEG_SIZE", "64k"},
    };
    for (size_t i = 0; i < sizeof(defaults) / sizeof(defaults[0]); i++) {
        if (getenv(defaults[i][0]) == NULL) ucp_config_modify(config, defaults[i][1], defaults[i][2]);
    }
}

int ducx_open(ducx_t **out) {
    ucp_config_t *config = NULL;
    ucs_status_t st = ucp_config_read(NULL, NULL, &config);
    if (st != UCS_OK) return st;
    tune(config);
    ucp_params_t params;
    memset(&params, 0, sizeof(params));
    params.field_mask = UCP_PARAM_FIELD_FEATURES;
    params.features = UCP_FEATURE_TAG | UCP_FEATURE_WAKEUP;
    ducx_t *d = calloc(1, sizeof(*d));
    if (!d) {
        ucp_config_release(config);
        return UCS_ERR_NO_MEMORY;
    }
    st = ucp_init(&params, config, &d->context);
    ucp_config_release(config);
    if (st != UCS_OK) {
        free(d);
        return st;
    }
    ucp_worker_params_t wp;
    memset(&wp, 0, sizeof(wp));
    wp.field_mask = UCP_WORKER_PARAM_FIELD_THREAD_MODE;
    wp.thread_mode = UCS_THREAD_MODE_SINGLE;
    st = ucp_worker_create(d->context, &wp, &d->worker);
    if (st != UCS_OK) {
        ucp_cleanup(d->context);
        free(d);
        return st;
    }
    st = ucp_worker_get_efd(d->worker, &d->efd);
    if (st != UCS_OK) {
        ucp_worker_destroy(d->worker);
        ucp_cleanup(d->context);
        free(d);
        return st;
    }
    *out = d;
    return 0;
}

/* The worker's address, to publish in the rendezvous store; copied into
 * `buf` (at most `cap` bytes). Returns its length, or a negative error. */
long ducx_address(ducx_t *d, void *buf, size_t cap) {
    ucp_address_t *addr = NULL;
    size_t len = 0;
    ucs_status_t st = ucp_worker_get_address(d->worker, &addr, &len);
    if (st != UCS_OK) return st;
    if (len > cap) {
        ucp_worker_release_address(d->worker, addr);
        return UCS_ERR_BUFFER_TOO_SMALL;
    }
    memcpy(buf, addr, len);
    ucp_worker_release_address(d->worker, addr);
    return (long)len;
}

/* Sets *(int *)arg to the failure: read by the progress thread, the only
 * thread on which UCX calls it. */
static void on_ep_error(void *arg, ucp_ep_h ep, ucs_status_t status) {
    (void)ep;
    *(int *)arg = (int)status;
}

int ducx_connect(ducx_t *d, const void *addr, int peer_errors, int *failed, void **ep) {
    ucp_ep_params_t p;
    memset(&p, 0, sizeof(p));
    p.field_mask = UCP_EP_PARAM_FIELD_REMOTE_ADDRESS | UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE |
                   UCP_EP_PARAM_FIELD_ERR_HANDLER;
    p.address = (const ucp_address_t *)addr;
    p.err_mode = peer_errors ? UCP_ERR_HANDLING_MODE_PEER : UCP_ERR_HANDLING_MODE_NONE;
    p.err_handler.cb = on_ep_error;
    p.err_handler.arg = failed;
    return ucp_ep_create(d->worker, &p, (ucp_ep_h *)ep);
}

static int started(ucs_status_ptr_t r, void **req) {
    if (r == NULL) return 0;
    if (UCS_PTR_IS_ERR(r)) return UCS_PTR_STATUS(r);
    *req = r;
    return 1;
}

/* Sends the `count` (1 or 2) buffers of `iov` as one message. `iov` is an
 * array of ucp_dt_iov_t owned by the caller: UCX reads it (not only the
 * buffers) until the send completes. */
int ducx_send(ducx_t *d, void *ep, uint64_t tag, void *iov, size_t count, void **req) {
    (void)d;
    ucp_request_param_t p;
    memset(&p, 0, sizeof(p));
    p.op_attr_mask = UCP_OP_ATTR_FIELD_DATATYPE;
    p.datatype = ucp_dt_make_iov();
    return started(ucp_tag_send_nbx((ucp_ep_h)ep, iov, count, tag, &p), req);
}

/* The next message that has arrived, removed from UCX's queue: 1 and its
 * tag, length and handle, or 0 when none has. */
int ducx_probe(ducx_t *d, uint64_t *tag, size_t *len, void **msg) {
    ucp_tag_recv_info_t info;
    ucp_tag_message_h m = ucp_tag_probe_nb(d->worker, 0, 0, 1, &info);
    if (m == NULL) return 0;
    *tag = info.sender_tag;
    *len = info.length;
    *msg = m;
    return 1;
}

int ducx_recv(ducx_t *d, void *msg, void *buf, size_t len, void **req) {
    ucp_request_param_t p;
    memset(&p, 0, sizeof(p));
    p.op_attr_mask = UCP_OP_ATTR_FIELD_DATATYPE;
    p.datatype = ucp_dt_make_contig(1);
    return started(ucp_tag_msg_recv_nbx(d->worker, buf, len, (ucp_tag_message_h)msg, &p), req);
}

/* 1 while `req` is in progress; otherwise frees it and returns its status. */
int ducx_test(void *req) {
    ucs_status_t st = ucp_request_check_status(req);
    if (st == UCS_INPROGRESS) return 1;
    ucp_request_free(req);
    return st;
}

void ducx_cancel(ducx_t *d, void *req) {
    ucp_request_cancel(d->worker, req);
}

unsigned ducx_progress(ducx_t *d) {
    return ucp_worker_progress(d->worker);
}

/* Sleeps until the worker has an event, ducx_signal is called, or
 * `timeout_ms` passes; returns at once when events are pending. */
int ducx_wait(ducx_t *d, int timeout_ms) {
    ucs_status_t st = ucp_worker_arm(d->worker);
    if (st == UCS_ERR_BUSY) return 0;
    if (st != UCS_OK) return st;
    struct pollfd pfd = {.fd = d->efd, .events = POLLIN};
    poll(&pfd, 1, timeout_ms);
    return 0;
}

/* Wakes the progress thread: safe from any thread (UCX documents it). */
int ducx_signal(ducx_t *d) {
    return ucp_worker_signal(d->worker);
}

/* Starts closing an endpoint, flushing what was sent on it (or at once
 * when `force`): 0 closed, 1 in progress (poll the request). */
int ducx_close_ep(ducx_t *d, void *ep, int force, void **req) {
    (void)d;
    ucp_request_param_t p;
    memset(&p, 0, sizeof(p));
    p.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
    p.flags = force ? UCP_EP_CLOSE_FLAG_FORCE : 0;
    return started(ucp_ep_close_nbx((ucp_ep_h)ep, &p), req);
}

void ducx_close(ducx_t *d) {
    ucp_worker_destroy(d->worker);
    ucp_cleanup(d->context);
    free(d);
}
