package main

import (
	"flag"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// docs/CONFIGURATION.md is what odin config-reference prints now.
func TestConfigurationReferenceIsUpToDate(t *testing.T) {
	const path = "../../docs/CONFIGURATION.md"
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(string(data), configReference()); diff != "" {
		t.Errorf("docs/CONFIGURATION.md is out of date; regenerate it, in the repository's root, with\n\n\tgo run ./cmd/odin config-reference > docs/CONFIGURATION.md\n\n(-file, +generated):\n%s", diff)
	}
	out, _, err := odin(t, "config-reference")
	if err != nil || out != configReference() {
		t.Errorf("odin config-reference: %v, or its output is not configReference()", err)
	}
}

// Every flag a command defines is in the reference: none is defined around
// the flags methods that record it, and none twice.
func TestConfigurationReferenceHasEveryFlag(t *testing.T) {
	for _, s := range configSections {
		for _, c := range s.commands {
			f := c.flags()
			var defined, documented []string
			f.VisitAll(func(fl *flag.Flag) { defined = append(defined, fl.Name) })
			for _, d := range f.docs {
				documented = append(documented, d.name)
			}
			slices.Sort(documented)
			if diff := cmp.Diff(defined, documented); diff != "" {
				t.Errorf("odin %s: flags defined (-) and documented (+):\n%s", c.name, diff)
			}
		}
	}
}

// Every command in odin's usage, and every keys, sessions and webhooks subcommand,
// has its section.
func TestConfigurationReferenceHasEveryCommand(t *testing.T) {
	var want []string
	for _, m := range regexp.MustCompile(`(?m)^  ([a-z]+) `).FindAllStringSubmatch(usage, -1) {
		switch m[1] {
		case "keys":
			for _, sub := range strings.Split(regexp.MustCompile(`<([a-z|]+)>`).FindStringSubmatch(keysUsage)[1], "|") {
				want = append(want, "keys "+sub)
			}
		case "sessions":
			want = append(want, "sessions revoke")
		case "webhooks":
			for _, sub := range strings.Split(regexp.MustCompile(`<([a-z|]+)>`).FindStringSubmatch(webhooksUsage)[1], "|") {
				want = append(want, "webhooks "+sub)
			}
		default:
			want = append(want, m[1])
		}
	}
	var got []string
	for _, s := range configSections {
		for _, c := range s.commands {
			got = append(got, c.name)
		}
	}
	slices.Sort(want)
	slices.Sort(got)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("commands in odin's usage (-) and in the reference (+):\n%s", diff)
	}
}

// The reference shows the declared defaults whatever the environment, and
// never a secret.
func TestConfigurationReferenceIgnoresEnvironment(t *testing.T) {
	clean := configReference()
	secrets := map[string]string{
		"ODIN_DATABASE_URL":     "postgres://odin:pg-password-in-env@db/odin",
		"ODIN_REDIS_URL":        "redis://:redis-password-in-env@redis:6379/0",
		"ODIN_REDIS_MAC_SECRET": "mac-secret-in-env-0123456789abcdef",
		"ODIN_ADMIN_TOKEN":      "admin-token-in-env-0123456789abcdef",
		"ODIN_WEBHOOK_SECRET":   "whsec_webhook-secret-in-env",
		"ODIN_CHECK_KEY":        "odin_sk_key-in-env",
	}
	for k, v := range secrets {
		t.Setenv(k, v)
	}
	t.Setenv("ODIN_CACHE_TTL", "1m")
	t.Setenv("ODIN_KEY_SCOPES", "a,b")
	t.Setenv("ODIN_GRPC_ADDR", ":1234")
	got := configReference()
	if diff := cmp.Diff(clean, got); diff != "" {
		t.Errorf("the environment changed the reference (-without, +with):\n%s", diff)
	}
	for k, v := range secrets {
		if strings.Contains(got, v) {
			t.Errorf("the reference shows %s's value", k)
		}
	}
}

func TestFormatDuration(t *testing.T) {
	for _, tt := range []struct {
		d    time.Duration
		want string
	}{
		{0, "0s"}, {500 * time.Millisecond, "500ms"}, {30 * time.Second, "30s"}, {5 * time.Minute, "5m"},
		{90 * time.Second, "1m30s"}, {24 * time.Hour, "24h"}, {90 * time.Minute, "1h30m"}, {720 * time.Hour, "720h"},
	} {
		if got := formatDuration(tt.d); got != tt.want {
			t.Errorf("formatDuration(%v) = %q, want %q", tt.d, got, tt.want)
		}
	}
}

func TestMarkdownText(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"RS*, never HS*", `RS\*, never HS\*`},
		{"https://<host>/x", "https://&lt;host&gt;/x"},
		{"a | b", `a \| b`},
		{"as `Authorization: Bearer <token>` or *", "as `Authorization: Bearer <token>` or \\*"},
	} {
		if got := markdownText(tt.in); got != tt.want {
			t.Errorf("markdownText(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}
