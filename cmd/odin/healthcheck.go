package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"
)

// runHealthcheck is `odin healthcheck`: the container health probe of images
// with no shell and no curl (distroless). It exits 0 when the URL answers
// 2xx in time, 1 otherwise.
// healthcheckConfig is what odin healthcheck's flags set.
type healthcheckConfig struct {
	target  string
	timeout time.Duration
	tls     tlsClientFlags // for https:// URLs: the admin port with TLS
}

// healthcheckFlagSet defines odin healthcheck's flags, writing to c.
func healthcheckFlagSet(c *healthcheckConfig) *flags {
	f := newFlags("healthcheck", "GET --url and exit 0 on a 2xx answer within --timeout, 1 otherwise.\nFor container health checks where there is no shell or curl, e.g. in compose:\n  test: [\"CMD\", \"/odin\", \"healthcheck\", \"--url\", \"http://127.0.0.1:9003/readyz\"]")
	f.String(&c.target, "url", "ODIN_HEALTHCHECK_URL", "http://127.0.0.1:9003/readyz", "URL to probe (authz: :9003/readyz, admin: :9004/readyz, devissuer: :9005/healthz)")
	f.Duration(&c.timeout, "timeout", "ODIN_HEALTHCHECK_TIMEOUT", 2*time.Second, "deadline of the probe")
	c.tls.bind(f, "ODIN_HEALTHCHECK_")
	return f
}

func runHealthcheck(ctx context.Context, args []string, stderr io.Writer) error {
	var c healthcheckConfig
	f, err := parseFlags(&c, healthcheckFlagSet, args, stderr)
	if err != nil {
		return err
	}
	target, timeout, tf := c.target, c.timeout, &c.tls
	if err := f.noArgs(); err != nil {
		return err
	}
	if u, err := url.Parse(target); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("healthcheck: --url %q: want an http:// or https:// URL", target)
	} else if tf.requested() && u.Scheme != "https" {
		return fmt.Errorf("healthcheck: --tls-* flags need an https:// --url, not %q", target)
	}
	tlsCfg, err := tf.config()
	if err != nil {
		return fmt.Errorf("healthcheck: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		return fmt.Errorf("healthcheck: %w", err)
	}
	// Straight to the target: a probe of the container's own port must not
	// go through an HTTP_PROXY from the environment.
	client := &http.Client{Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true, TLSClientConfig: tlsCfg}}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("healthcheck: %w", err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("healthcheck: GET %s: %s", target, resp.Status)
	}
	return nil
}
