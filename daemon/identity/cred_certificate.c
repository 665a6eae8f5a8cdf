/* cred_certificate.c - credential = certificate: a client assertion signed
 * with the application's certificate (ENTRA.md 2). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>

#include "credential.h"
#include "keyfile.h"
#include "../lib/certificate.h"
#include "../lib/secmem.h"

/* A certificate file with its chain and key, PEM or PKCS#12. */
#define CERTIFICATE_SIZE_MAX (256 * 1024)

struct cert {
	char *file;	       /* certificate_file, or: */
	char *credential;      /* certificate_credential */
	char *key_file;	       /* when the key is not in the certificate file */
	char *passphrase_file; /* or: */
	char *passphrase_credential;
	bool send_x5c;
	enum assertion_alg alg;
	struct certificate *loaded;
};

enum {
	K_FILE,
	K_CREDENTIAL,
	K_KEY_FILE,
	K_PASSPHRASE_FILE,
	K_PASSPHRASE_CREDENTIAL,
	K_SEND_X5C,
	K_ALGORITHM,
};

static const char *const keys[] = {
    [K_FILE] = "certificate_file",
    [K_CREDENTIAL] = "certificate_credential",
    [K_KEY_FILE] = "key_file",
    [K_PASSPHRASE_FILE] = "certificate_passphrase_file",
    [K_PASSPHRASE_CREDENTIAL] = "certificate_passphrase_credential",
    [K_SEND_X5C] = "send_x5c",
    [K_ALGORITHM] = "assertion_algorithm",
    NULL,
};

static int set_key(struct identity *id, const struct conf_pos *at, const char *key, const char *v)
{
	struct cert *c = id->cred_data;

	switch (conf_key_index(keys, key)) {
	case K_FILE:
		return conf_set_path(at, key, v, &c->file);
	case K_CREDENTIAL:
		return conf_check_credential_name(at, key, v) ?: conf_set_string(&c->credential, v);
	case K_KEY_FILE:
		return conf_set_path(at, key, v, &c->key_file);
	case K_PASSPHRASE_FILE:
		return conf_set_path(at, key, v, &c->passphrase_file);
	case K_PASSPHRASE_CREDENTIAL:
		return conf_check_credential_name(at, key, v)
			   ?: conf_set_string(&c->passphrase_credential, v);
	case K_SEND_X5C:
		return conf_parse_bool(at, key, v, &c->send_x5c);
	case K_ALGORITHM:
		if (!strcmp(v, "PS256"))
			c->alg = ASSERTION_PS256;
		else if (!strcmp(v, "RS256"))
			c->alg = ASSERTION_RS256;
		else
			return conf_error(at, "assertion_algorithm: '%s' is not PS256 or RS256", v)
				   ?: -EINVAL;
		return 0;
	}
	return -EINVAL;
}

static int check(struct identity *id, const struct conf_pos *at)
{
	const struct cert *c = id->cred_data;
	int r = 0;

	if (!c->file == !c->credential)
		r = conf_error(at,
			       "[identity %s]: give exactly one of certificate_file = or "
			       "certificate_credential =",
			       id->name);
	if (r == 0 && c->passphrase_file && c->passphrase_credential)
		r = conf_error(at,
			       "[identity %s]: give at most one of certificate_passphrase_file = "
			       "or certificate_passphrase_credential =",
			       id->name);
	return r;
}

/* Loads the certificate, its key and passphrase: --check-config proves they
 * load and match. */
static int load(struct identity *id, const char *credentials_dir, struct config_errors *errs)
{
	struct cert *c = id->cred_data;
	struct keyfile cf = {"certificate", c->file, c->credential, CERTIFICATE_SIZE_MAX, true};
	struct keyfile kf = {"key", c->key_file, NULL, CERTIFICATE_SIZE_MAX, false};
	struct keyfile pf = {"certificate_passphrase", c->passphrase_file, c->passphrase_credential,
			     SECRET_SIZE_MAX, false};
	char *data = NULL, *key = NULL, *pass = NULL, err[512] = "";
	size_t data_len = 0, key_len = 0, n;
	int r;

	r = keyfile_read(id, &cf, credentials_dir, &data, &data_len, errs);
	if (r == 0 && c->key_file)
		r = keyfile_read(id, &kf, credentials_dir, &key, &key_len, errs);
	if (r == 0 && (c->passphrase_file || c->passphrase_credential))
		r = keyfile_read(id, &pf, credentials_dir, &pass, &n, errs);
	if (r == 0) {
		/* A secure-heap string may be longer than what it holds. */
		r = certificate_load(data, data_len, key, key_len, pass, &c->loaded, err,
				     sizeof(err));
		if (r < 0 && r != -ENOMEM)
			r = identity_error(errs, id, "certificate %s: %s",
					   c->file ? c->file : c->credential, err);
	}
	secmem_free(data, data_len + 1);
	secmem_free(key, key_len + 1);
	secmem_free_str(pass);
	return r;
}

static bool same(const struct identity *a, const struct identity *b)
{
	const struct cert *x = a->cred_data, *y = b->cred_data;

	return x->send_x5c == y->send_x5c && x->alg == y->alg &&
	       certificate_equal(x->loaded, y->loaded);
}

static void key(const struct identity *id, struct credential_key *k)
{
	const struct cert *c = id->cred_data;

	credential_key_add(k, c->loaded ? certificate_thumbprint(c->loaded) : NULL);
	credential_key_add(k, c->send_x5c ? "x5c" : "");
	credential_key_add(k, c->alg == ASSERTION_RS256 ? "RS256" : "PS256");
}

static void clear(void *data)
{
	struct cert *c = data;

	free(c->file);
	free(c->credential);
	free(c->key_file);
	free(c->passphrase_file);
	free(c->passphrase_credential);
	certificate_free(c->loaded);
}

static int describe(const struct identity *id, struct bt_record *rec)
{
	const struct certificate *c = ((const struct cert *)id->cred_data)->loaded;

	return bt_record_add_str(rec, "certificate", certificate_subject(c))
	       ?: bt_record_add_str(rec, "thumbprint", certificate_thumbprint(c))
	       ?: bt_record_add_int(rec, "certificate_expires", BT_FIELD_TIME,
				    certificate_not_after(c));
}

static int audit(const struct identity *id, int64_t now, char *msg, size_t n)
{
	const struct certificate *c = ((const struct cert *)id->cred_data)->loaded;
	int64_t end;
	char date[32];

	if (!c)
		return 0;
	end = certificate_not_after(c);
	certificate_date(end, date, sizeof(date));
	if (end <= now) {
		snprintf(msg, n,
			 "identity %s: certificate %s (thumbprint %s) expired on %s: renew it and "
			 "register the new one on the application",
			 id->name, certificate_subject(c), certificate_thumbprint(c), date);
		return LOG_ERR;
	}
	if (end - now < CERTIFICATE_WARN_AHEAD) {
		snprintf(msg, n,
			 "identity %s: certificate %s (thumbprint %s) expires on %s, in %lld days: "
			 "renew it and register the new one on the application",
			 id->name, certificate_subject(c), certificate_thumbprint(c), date,
			 (long long)((end - now) / 86400));
		return LOG_WARNING;
	}
	return 0;
}

static int build(const struct cred_input *in, struct http_request *req, struct token_result *err)
{
	const struct identity *id = in->id;
	const struct cert *c = id->cred_data;
	char *aud = NULL, *assertion = NULL, date[32];
	int r;

	/* Entra would refuse it anyway; saying so here names the fix. */
	if (in->now >= certificate_not_after(c->loaded)) {
		certificate_date(certificate_not_after(c->loaded), date, sizeof(date));
		return credential_fail(
		    err, req, BT_E_CREDENTIAL_REJECTED, -EKEYEXPIRED,
		    "the certificate of identity '%s' (%s, thumbprint %s) expired on %s: renew "
		    "it, register the new one on the application and replace %s",
		    id->name, certificate_subject(c->loaded), certificate_thumbprint(c->loaded),
		    date, c->file ? c->file : "the credential");
	}
	if (in->now < certificate_not_before(c->loaded)) {
		certificate_date(certificate_not_before(c->loaded), date, sizeof(date));
		return credential_fail(err, req, BT_E_CREDENTIAL_REJECTED, -EKEYREJECTED,
				       "the certificate of identity '%s' is not valid before %s: "
				       "check the clock",
				       id->name, date);
	}
	/* The assertion's audience is the token endpoint itself. */
	r = entra_token_url(id, &aud);
	if (r == 0)
		r = certificate_assertion(c->loaded, c->alg, c->send_x5c, id->client_id, aud,
					  in->now, &assertion);
	free(aud);
	if (r < 0)
		return credential_fail(err, req, BT_E_INTERNAL, r,
				       "cannot sign a client assertion with the certificate of "
				       "identity '%s'",
				       id->name);
	r = credential_client_request(in, req, err, "client_assertion_type", CLIENT_ASSERTION_TYPE,
				      "client_assertion", assertion);
	secmem_free_str(assertion);
	return r;
}

const struct credential_ops credential_certificate = {
    .name = "certificate",
    .keys = keys,
    .data_size = sizeof(struct cert),
    .set_key = set_key,
    .check = check,
    .load = load,
    .same = same,
    .key = key,
    .clear = clear,
    .describe = describe,
    .audit = audit,
    .build_request = build,
    .parse_response = credential_entra_parse,
};
