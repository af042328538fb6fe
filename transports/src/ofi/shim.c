/*
 * Non-inline wrappers over libfabric's data-path API for the `ofi` transport.
 *
 * Most of libfabric's API (fi_fabric, fi_domain, fi_mr_reg, fi_writedata, fi_cq_read, ...)
 * is `static inline` in the headers and has no symbol in libfabric.so, so Rust reaches it
 * through these functions (declared by hand in ofi/ffi.rs; keep the two in step).
 * Every function returns 0 / a count on success and a negative libfabric errno on failure.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <rdma/fabric.h>
#include <rdma/fi_cm.h>
#include <rdma/fi_domain.h>
#include <rdma/fi_endpoint.h>
#include <rdma/fi_errno.h>
#include <rdma/fi_rma.h>

/* What the chosen provider offers (mirrored by `FcAttr` in ffi.rs). */
struct fc_attr {
	uint64_t mr_mode;
	uint64_t cq_data_size;
	uint64_t max_msg_size;
	uint64_t inject_size;
	uint64_t caps;
	char prov_name[64];
	char fabric_name[64];
};

/* One completion (mirrored by `FcCqe`). */
struct fc_cqe {
	uint64_t ctx;
	uint64_t flags;
	uint64_t len;
	uint64_t data;
};

/* One error completion (mirrored by `FcCqErr`). */
struct fc_cqerr {
	uint64_t ctx;
	uint64_t flags;
	int32_t err;
	int32_t prov_errno;
	char msg[256];
};

/* An open endpoint and everything it hangs off. */
struct fc_ep {
	struct fi_info *info;
	struct fid_fabric *fabric;
	struct fid_domain *domain;
	struct fid_av *av;
	struct fid_cq *cq;
	struct fid_ep *ep;
	int wait_fd;
};

static struct fi_info *fc_hints(const char *prov)
{
	struct fi_info *h = fi_allocinfo();
	if (!h)
		return NULL;
	h->ep_attr->type = FI_EP_RDM;
	h->caps = FI_MSG | FI_RMA | FI_READ | FI_WRITE | FI_REMOTE_READ | FI_REMOTE_WRITE |
		  FI_SEND | FI_RECV;
	h->mode = 0;
	h->domain_attr->mr_mode = FI_MR_LOCAL | FI_MR_VIRT_ADDR | FI_MR_ALLOCATED | FI_MR_PROV_KEY;
	h->domain_attr->threading = FI_THREAD_SAFE;
	h->addr_format = FI_FORMAT_UNSPEC;
	if (prov) {
		h->fabric_attr->prov_name = strdup(prov);
		if (!h->fabric_attr->prov_name) {
			fi_freeinfo(h);
			return NULL;
		}
	}
	return h;
}

static void fc_fill_attr(const struct fi_info *i, struct fc_attr *a)
{
	memset(a, 0, sizeof(*a));
	a->mr_mode = (uint64_t)(unsigned)i->domain_attr->mr_mode;
	a->cq_data_size = i->domain_attr->cq_data_size;
	a->max_msg_size = i->ep_attr->max_msg_size;
	a->inject_size = i->tx_attr ? i->tx_attr->inject_size : 0;
	a->caps = i->caps;
	if (i->fabric_attr->prov_name)
		strncpy(a->prov_name, i->fabric_attr->prov_name, sizeof(a->prov_name) - 1);
	if (i->fabric_attr->name)
		strncpy(a->fabric_name, i->fabric_attr->name, sizeof(a->fabric_name) - 1);
}

/* Looks the provider up (on interface `node` when not NULL) and returns its first match's
 * attributes, or a negative errno (-FI_ENODATA: no such provider or no RMA there). */
int fc_probe(const char *prov, const char *node, struct fc_attr *attr)
{
	struct fi_info *h = fc_hints(prov), *info = NULL;
	int ret;
	if (!h)
		return -FI_ENOMEM;
	ret = fi_getinfo(FI_VERSION(1, 17), node, NULL, node ? FI_SOURCE : 0, h, &info);
	fi_freeinfo(h);
	if (ret)
		return ret;
	fc_fill_attr(info, attr);
	fi_freeinfo(info);
	return 0;
}

void fc_close(struct fc_ep *e)
{
	if (!e)
		return;
	if (e->ep)
		fi_close(&e->ep->fid);
	if (e->av)
		fi_close(&e->av->fid);
	if (e->cq)
		fi_close(&e->cq->fid);
	if (e->domain)
		fi_close(&e->domain->fid);
	if (e->fabric)
		fi_close(&e->fabric->fid);
	if (e->info)
		fi_freeinfo(e->info);
	free(e);
}

/* Opens fabric, domain, a CQ (with a wait fd where the provider has one), an AV and an
 * enabled RDM endpoint bound to interface `node` (any when NULL). */
int fc_open(const char *prov, const char *node, struct fc_ep **out, struct fc_attr *attr)
{
	struct fi_info *h = fc_hints(prov);
	struct fc_ep *e;
	struct fi_cq_attr cq_attr;
	struct fi_av_attr av_attr;
	int ret;

	*out = NULL;
	if (!h)
		return -FI_ENOMEM;
	e = calloc(1, sizeof(*e));
	if (!e) {
		fi_freeinfo(h);
		return -FI_ENOMEM;
	}
	e->wait_fd = -1;
	ret = fi_getinfo(FI_VERSION(1, 17), node, NULL, node ? FI_SOURCE : 0, h, &e->info);
	fi_freeinfo(h);
	if (ret)
		goto fail;
	fc_fill_attr(e->info, attr);
	ret = fi_fabric(e->info->fabric_attr, &e->fabric, NULL);
	if (ret)
		goto fail;
	ret = fi_domain(e->fabric, e->info, &e->domain, NULL);
	if (ret)
		goto fail;

	memset(&cq_attr, 0, sizeof(cq_attr));
	cq_attr.format = FI_CQ_FORMAT_DATA;
	cq_attr.size = 4096;
	cq_attr.wait_obj = FI_WAIT_FD;
	ret = fi_cq_open(e->domain, &cq_attr, &e->cq, NULL);
	if (ret) {
		/* No fd to sleep on: the caller polls instead. */
		cq_attr.wait_obj = FI_WAIT_NONE;
		ret = fi_cq_open(e->domain, &cq_attr, &e->cq, NULL);
		if (ret)
			goto fail;
	} else if (fi_control(&e->cq->fid, FI_GETWAIT, &e->wait_fd)) {
		e->wait_fd = -1;
	}

	memset(&av_attr, 0, sizeof(av_attr));
	av_attr.type = FI_AV_TABLE;
	ret = fi_av_open(e->domain, &av_attr, &e->av, NULL);
	if (ret)
		goto fail;
	ret = fi_endpoint(e->domain, e->info, &e->ep, NULL);
	if (ret)
		goto fail;
	ret = fi_ep_bind(e->ep, &e->av->fid, 0);
	if (ret)
		goto fail;
	ret = fi_ep_bind(e->ep, &e->cq->fid, FI_TRANSMIT | FI_RECV);
	if (ret)
		goto fail;
	ret = fi_enable(e->ep);
	if (ret)
		goto fail;
	*out = e;
	return 0;
fail:
	fc_close(e);
	return ret;
}

int fc_getname(struct fc_ep *e, void *buf, size_t *len)
{
	return fi_getname(&e->ep->fid, buf, len);
}

int fc_av_insert(struct fc_ep *e, const void *addr, uint64_t *fi_addr)
{
	fi_addr_t a = FI_ADDR_NOTAVAIL;
	int n = fi_av_insert(e->av, addr, 1, &a, 0, NULL);
	*fi_addr = a;
	if (n == 1)
		return 0;
	return n < 0 ? n : -FI_EINVAL;
}

int fc_mr_reg(struct fc_ep *e, const void *buf, size_t len, uint64_t access, uint64_t req_key,
	      struct fid_mr **mr, uint64_t *key, void **desc)
{
	int ret = fi_mr_reg(e->domain, buf, len, access, 0, req_key, 0, mr, NULL);
	if (ret)
		return ret;
	*key = fi_mr_key(*mr);
	*desc = fi_mr_desc(*mr);
	return 0;
}

int fc_mr_close(struct fid_mr *mr)
{
	return fi_close(&mr->fid);
}

ssize_t fc_write(struct fc_ep *e, const void *buf, size_t len, void *desc, uint64_t dest,
		 uint64_t raddr, uint64_t key, uint64_t data, int with_data, uint64_t ctx)
{
	if (with_data)
		return fi_writedata(e->ep, buf, len, desc, data, dest, raddr, key, (void *)ctx);
	return fi_write(e->ep, buf, len, desc, dest, raddr, key, (void *)ctx);
}

ssize_t fc_read(struct fc_ep *e, void *buf, size_t len, void *desc, uint64_t src,
		uint64_t raddr, uint64_t key, uint64_t ctx)
{
	return fi_read(e->ep, buf, len, desc, src, raddr, key, (void *)ctx);
}

ssize_t fc_send(struct fc_ep *e, const void *buf, size_t len, void *desc, uint64_t dest,
		uint64_t ctx)
{
	return fi_send(e->ep, buf, len, desc, dest, (void *)ctx);
}

ssize_t fc_recv(struct fc_ep *e, void *buf, size_t len, void *desc, uint64_t ctx)
{
	return fi_recv(e->ep, buf, len, desc, FI_ADDR_UNSPEC, (void *)ctx);
}

/* Reads up to `n` completions; -FI_EAGAIN when none, -FI_EAVAIL when an error waits. */
ssize_t fc_cq_read(struct fc_ep *e, struct fc_cqe *out, size_t n)
{
	struct fi_cq_data_entry ent[64];
	ssize_t got, i;
	if (n > 64)
		n = 64;
	got = fi_cq_read(e->cq, ent, n);
	for (i = 0; i < got; i++) {
		out[i].ctx = (uint64_t)(uintptr_t)ent[i].op_context;
		out[i].flags = ent[i].flags;
		out[i].len = ent[i].len;
		out[i].data = ent[i].data;
	}
	return got;
}

int fc_cq_readerr(struct fc_ep *e, struct fc_cqerr *out)
{
	struct fi_cq_err_entry err;
	const char *s;
	ssize_t ret;
	memset(&err, 0, sizeof(err));
	memset(out, 0, sizeof(*out));
	ret = fi_cq_readerr(e->cq, &err, 0);
	if (ret < 0)
		return (int)ret;
	out->ctx = (uint64_t)(uintptr_t)err.op_context;
	out->flags = err.flags;
	out->err = err.err;
	out->prov_errno = err.prov_errno;
	s = fi_cq_strerror(e->cq, err.prov_errno, err.err_data, NULL, 0);
	if (!s)
		s = fi_strerror(err.err);
	strncpy(out->msg, s, sizeof(out->msg) - 1);
	return 0;
}

int fc_wait_fd(struct fc_ep *e)
{
	return e->wait_fd;
}

/* 0 when the caller may sleep on the wait fd; -FI_EAGAIN when it must read the CQ first. */
int fc_trywait(struct fc_ep *e)
{
	struct fid *f = &e->cq->fid;
	return fi_trywait(e->fabric, &f, 1);
}
