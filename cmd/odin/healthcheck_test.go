package main

import (
	"context"
	"errors"
	"flag"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestHealthcheck(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/readyz":
			_, _ = io.WriteString(w, "ok")
		case "/slow":
			select {
			case <-time.After(5 * time.Second):
			case <-r.Context().Done():
			}
		default:
			http.Error(w, "not ready", http.StatusServiceUnavailable)
		}
	}))
	defer srv.Close()

	for _, tc := range []struct {
		name string
		args []string
		want string // "" for success
	}{
		{"ready", []string{"--url", srv.URL + "/readyz"}, ""},
		{"not ready", []string{"--url", srv.URL + "/unready"}, "503"},
		{"too slow", []string{"--url", srv.URL + "/slow", "--timeout", "100ms"}, "deadline"},
		{"nothing listening", []string{"--url", "http://127.0.0.1:1/readyz"}, "refused"},
		{"not a URL", []string{"--url", "127.0.0.1:9003/readyz"}, "want an http"},
		{"stray argument", []string{"now"}, `unexpected argument "now"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := runHealthcheck(context.Background(), tc.args, io.Discard)
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("err = %v, want success", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("err = %v, want one mentioning %q", err, tc.want)
			}
		})
	}

	t.Setenv("ODIN_HEALTHCHECK_URL", srv.URL+"/readyz")
	if err := runHealthcheck(context.Background(), nil, io.Discard); err != nil {
		t.Errorf("URL from ODIN_HEALTHCHECK_URL: %v", err)
	}
	var help strings.Builder
	if err := runHealthcheck(context.Background(), []string{"-h"}, &help); !errors.Is(err, flag.ErrHelp) || !strings.Contains(help.String(), "ODIN_HEALTHCHECK_URL") {
		t.Errorf("-h: %v\n%s", err, help.String())
	}
}
