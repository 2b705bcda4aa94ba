package helm_test

import (
	"fmt"
	"slices"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
)

// checkMigration checks the migration Job: a pre-install and pre-upgrade
// hook running `odin migrate` with the database URL the Deployments read,
// from a Secret that exists when hooks run.
func (s chartSet) checkMigration(want expect) []error {
	if len(s.jobs) != 1 {
		return []error{fmt.Errorf("want one migration Job, got %d", len(s.jobs))}
	}
	o := s.jobs[0]
	f := &failer{o: o}
	j := o.obj.(*batchv1.Job)
	if !o.hook {
		f.fail("is not a Helm hook")
	}
	events := strings.Split(j.Annotations["helm.sh/hook"], ",")
	slices.Sort(events)
	if !slices.Equal(events, []string{"pre-install", "pre-upgrade"}) {
		f.fail("helm.sh/hook is %q, want pre-install,pre-upgrade", j.Annotations["helm.sh/hook"])
	}
	if !strings.Contains(j.Annotations["helm.sh/hook-delete-policy"], "before-hook-creation") {
		f.fail("hook-delete-policy %q lacks before-hook-creation: the next upgrade would fail on the old Job", j.Annotations["helm.sh/hook-delete-policy"])
	}
	pod := j.Spec.Template.Spec
	if pod.RestartPolicy != corev1.RestartPolicyNever && pod.RestartPolicy != corev1.RestartPolicyOnFailure {
		f.fail("restartPolicy %q", pod.RestartPolicy)
	}
	if j.Spec.Template.Labels["sidecar.istio.io/inject"] != "false" {
		f.fail("an Istio sidecar would keep the finished Job running: label sidecar.istio.io/inject=\"false\"")
	}
	if pod.SecurityContext == nil || pod.SecurityContext.RunAsNonRoot == nil || !*pod.SecurityContext.RunAsNonRoot {
		f.fail("pod runAsNonRoot must be true")
	}
	if len(pod.Containers) != 1 {
		f.fail("want one container")
		return f.errs
	}
	c := pod.Containers[0]
	if !slices.Equal(c.Args, []string{"migrate"}) {
		f.fail("args %v, want [migrate]", c.Args)
	}
	checkContainerSecurity(f, c)
	i := slices.IndexFunc(c.Env, func(e corev1.EnvVar) bool { return e.Name == "ODIN_DATABASE_URL" })
	if i < 0 || secretRef(c.Env[i]) == nil {
		f.fail("ODIN_DATABASE_URL must come from a Secret")
		return f.errs
	}
	ref := secretRef(c.Env[i])
	jobURL, ok := s.hookSecretValue(ref, j)
	switch {
	case slices.Contains(want.externalSecrets, ref.Name):
		jobURL = "external " + ref.Name + "/" + ref.Key
	case !ok:
		f.fail("reads Secret %q, which is neither an existingSecret nor a hook created before the Job (a regular Secret of the chart does not exist yet when pre-install hooks run)", ref.Name)
		return f.errs
	}
	for _, do := range s.deployments {
		for _, e := range do.obj.(*appsv1.Deployment).Spec.Template.Spec.Containers[0].Env {
			dref := secretRef(e)
			if e.Name != "ODIN_DATABASE_URL" || dref == nil {
				continue
			}
			depURL := "external " + dref.Name + "/" + dref.Key
			if !slices.Contains(want.externalSecrets, dref.Name) {
				depURL = s.secretValue(dref.Name, dref.Key)
			}
			if depURL != jobURL {
				f.fail("migrates another database than %s reads (%s/%s)", do.meta.Name, dref.Name, dref.Key)
			}
		}
	}
	return f.errs
}

// hookSecretValue returns the value of a Secret key ref when the Secret is a
// hook created before the Job for the same events.
func (s chartSet) hookSecretValue(ref *corev1.SecretKeySelector, j *batchv1.Job) (string, bool) {
	for _, o := range s.secrets {
		sec := o.obj.(*corev1.Secret)
		if o.meta.Name != ref.Name || !o.hook {
			continue
		}
		if sec.Annotations["helm.sh/hook"] != j.Annotations["helm.sh/hook"] || weight(sec.Annotations) >= weight(j.Annotations) {
			return "", false
		}
		v, ok := sec.Data[ref.Key]
		return string(v), ok
	}
	return "", false
}

func weight(a map[string]string) int {
	var w int
	fmt.Sscan(a["helm.sh/hook-weight"], &w)
	return w
}

// secretValue returns a key of a regular Secret of the chart.
func (s chartSet) secretValue(name, key string) string {
	for _, o := range s.secrets {
		if o.meta.Name == name && !o.hook {
			return string(o.obj.(*corev1.Secret).Data[key])
		}
	}
	return ""
}
