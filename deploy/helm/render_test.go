package helm_test

import (
	"fmt"
	"log/slog"
	"regexp"
	"strings"
	"testing"

	"helm.sh/helm/v4/pkg/action"
	"helm.sh/helm/v4/pkg/chart/common"
	chart "helm.sh/helm/v4/pkg/chart/v2"
	"helm.sh/helm/v4/pkg/chart/v2/loader"
	release "helm.sh/helm/v4/pkg/release/v1"
)

const (
	chartDir       = "odin"
	productionFile = "odin/values-production.yaml"
	releaseName    = "odin"
	releaseNS      = "odin"
)

// document is one rendered YAML document and where it came from.
type document struct {
	source string // the template, e.g. odin/templates/authz-deployment.yaml
	hook   bool
	yaml   string
}

// rendering is what `helm template` would print: the release's manifests and
// its hooks, and the NOTES.
type rendering struct {
	docs  []document
	notes string
}

// kubeVersion is the cluster version rendered for (.Capabilities.KubeVersion).
// Without it the SDK reports the version of the client-go it was linked
// with, which is only set by Helm's own release build (v1.20 otherwise).
func kubeVersion(t *testing.T) *common.KubeVersion {
	t.Helper()
	v, err := common.ParseKubeVersion("v1.31.0")
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func loadChart(t *testing.T) *chart.Chart {
	t.Helper()
	ch, err := loader.Load(chartDir)
	if err != nil {
		t.Fatalf("load chart: %v", err)
	}
	return ch
}

// readValues reads values files and merges them, later files winning, as
// `helm -f a -f b` does.
func readValues(t *testing.T, files ...string) map[string]any {
	t.Helper()
	vals := map[string]any{}
	for _, f := range files {
		v, err := common.ReadValuesFile(f)
		if err != nil {
			t.Fatalf("read %s: %v", f, err)
		}
		vals = loader.MergeMaps(vals, v.AsMap())
	}
	return vals
}

// renderChart renders the chart as `helm install --dry-run=client` does
// (which is also `helm template`): values schema validated, hooks sorted out,
// no cluster contacted.
func renderChart(t *testing.T, vals map[string]any) (rendering, error) {
	t.Helper()
	cfg := action.NewConfiguration(action.ConfigurationSetLogger(slog.DiscardHandler))
	install := action.NewInstall(cfg)
	install.DryRunStrategy = action.DryRunClient
	install.ReleaseName = releaseName
	install.Namespace = releaseNS
	install.Replace = true
	install.KubeVersion = kubeVersion(t)
	res, err := install.Run(loadChart(t), vals)
	if err != nil {
		return rendering{}, err
	}
	rel, ok := res.(*release.Release)
	if !ok {
		return rendering{}, fmt.Errorf("install returned a %T, want *release.Release", res)
	}
	r := rendering{notes: rel.Info.Notes}
	r.docs = append(r.docs, splitManifest(rel.Manifest, false)...)
	for _, h := range rel.Hooks {
		for _, d := range splitManifest(h.Manifest, true) {
			d.source = h.Path
			r.docs = append(r.docs, d)
		}
	}
	return r, nil
}

var (
	docSeparator = regexp.MustCompile(`(?m)^---\s*$`)
	sourceLine   = regexp.MustCompile(`(?m)^# Source: (\S+)\s*$`)
)

// splitManifest splits a multi-document manifest, keeping each document's
// "# Source:" template.
func splitManifest(m string, hook bool) []document {
	var docs []document
	source := ""
	for _, part := range docSeparator.Split(m, -1) {
		if s := sourceLine.FindStringSubmatch(part); s != nil {
			source = s[1]
		}
		if strings.TrimSpace(sourceLine.ReplaceAllString(part, "")) == "" {
			continue
		}
		docs = append(docs, document{source: source, hook: hook, yaml: part})
	}
	return docs
}
