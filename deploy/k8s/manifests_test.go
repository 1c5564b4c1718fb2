package k8s

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	sigsyaml "sigs.k8s.io/yaml"

	"github.com/conveyorhq/conveyor/internal/cli"
	natsdispatch "github.com/conveyorhq/conveyor/internal/dispatch/nats"
	"github.com/conveyorhq/conveyor/internal/natsworker"
)

// The names the manifests share with Conveyor's code, in one place. The
// stream, subject and consumer must match what `conveyor up --nats`
// publishes to and what `worker serve` pulls from (their defaults).
const (
	deploymentName = "conveyor-worker"
	configMapName  = "conveyor-config"
	streamName     = natsdispatch.DefaultStream // what up --nats publishes to
	consumerName   = natsworker.DefaultDurable  // what worker serve pulls through
	imageName      = "conveyor"
	binary         = "/usr/local/bin/conveyor" // deploy/image
	imageUID       = 65532                     // deploy/image
	dataDir        = "/var/lib/conveyor"       // deploy/image
	configPath     = "/etc/conveyor/conveyor.yaml"
)

// kedaTriggerKeys are the metadata keys KEDA documents for its
// nats-jetstream scaler (keda.sh/docs/scalers/nats-jetstream), and the
// ones it requires.
var (
	kedaTriggerKeys = []string{"natsServerMonitoringEndpoint", "account", "stream", "consumer", "lagThreshold", "activationLagThreshold", "useHttps"}
	kedaRequired    = []string{"natsServerMonitoringEndpoint", "account", "stream", "consumer", "lagThreshold"}
)

// scaledObject mirrors the fields of KEDA's keda.sh/v1alpha1 ScaledObject
// that these manifests use; strict decoding rejects any other.
type scaledObject struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		ScaleTargetRef struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
			Name       string `json:"name"`
		} `json:"scaleTargetRef"`
		PollingInterval *int32 `json:"pollingInterval"`
		CooldownPeriod  *int32 `json:"cooldownPeriod"`
		MinReplicaCount *int32 `json:"minReplicaCount"`
		MaxReplicaCount *int32 `json:"maxReplicaCount"`
		Advanced        *struct {
			HorizontalPodAutoscalerConfig *struct {
				Behavior map[string]any `json:"behavior"`
			} `json:"horizontalPodAutoscalerConfig"`
		} `json:"advanced"`
		Triggers []struct {
			Type     string            `json:"type"`
			Metadata map[string]string `json:"metadata"`
		} `json:"triggers"`
	} `json:"spec"`
}

// kustomization mirrors the fields of kustomize's Kustomization used here.
type kustomization struct {
	APIVersion string   `json:"apiVersion"`
	Kind       string   `json:"kind"`
	Namespace  string   `json:"namespace"`
	Resources  []string `json:"resources"`
	Labels     []struct {
		Pairs map[string]string `json:"pairs"`
	} `json:"labels"`
	Images []struct {
		Name    string `json:"name"`
		NewName string `json:"newName"`
		NewTag  string `json:"newTag"`
	} `json:"images"`
}

// decode reads one YAML document of file strictly into v: an unknown or
// misspelt field is an error, as `kubectl apply --validate=strict` has it.
func decode(t *testing.T, file string, v any) {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if err := sigsyaml.UnmarshalStrict(b, v); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
}

// documents splits a multi-document YAML file.
func documents(t *testing.T, file string) [][]byte {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var docs [][]byte
	for _, d := range bytes.Split(b, []byte("\n---\n")) {
		if len(bytes.TrimSpace(d)) > 0 {
			docs = append(docs, d)
		}
	}
	return docs
}

type manifests struct {
	deploy  appsv1.Deployment
	config  corev1.ConfigMap
	secrets map[string]corev1.Secret
	scaled  scaledObject
	kust    kustomization
}

func load(t *testing.T) manifests {
	t.Helper()
	var m manifests
	decode(t, "kustomization.yaml", &m.kust)
	decode(t, "deployment.yaml", &m.deploy)
	decode(t, "configmap.yaml", &m.config)
	decode(t, "scaledobject.yaml", &m.scaled)
	m.secrets = map[string]corev1.Secret{}
	for _, d := range documents(t, "secrets.example.yaml") {
		var s corev1.Secret
		if err := sigsyaml.UnmarshalStrict(d, &s); err != nil {
			t.Fatalf("secrets.example.yaml: %v", err)
		}
		m.secrets[s.Name] = s
	}
	return m
}

// TestKustomization: every manifest but the Secrets' example is applied,
// and nothing it names is missing.
func TestKustomization(t *testing.T) {
	m := load(t)
	k := m.kust
	if k.APIVersion != "kustomize.config.k8s.io/v1beta1" || k.Kind != "Kustomization" {
		t.Errorf("kustomization is %s %s", k.APIVersion, k.Kind)
	}
	files, err := filepath.Glob("*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, f := range files {
		if f != "kustomization.yaml" && f != "secrets.example.yaml" {
			want = append(want, f)
		}
	}
	got := slices.Clone(k.Resources)
	sort.Strings(got)
	if !slices.Equal(got, want) {
		t.Errorf("kustomization resources %q, want every manifest %q (the Secrets' example stays out)", got, want)
	}
	if len(k.Images) != 1 || k.Images[0].Name != imageName || m.deploy.Spec.Template.Spec.Containers[0].Image != imageName {
		t.Errorf("the kustomization's image %+v does not rewrite the Deployment's image %q", k.Images, m.deploy.Spec.Template.Spec.Containers[0].Image)
	}
}

// TestDeployment asserts what a worker pod relies on: the command, where
// its configuration and credentials come from, the hardening, the volume
// per pod, and time to hand jobs back on stop.
func TestDeployment(t *testing.T) {
	m := load(t)
	d := m.deploy
	if d.APIVersion != "apps/v1" || d.Kind != "Deployment" || d.Name != deploymentName {
		t.Fatalf("deployment.yaml is %s %s %q", d.APIVersion, d.Kind, d.Name)
	}
	if sel := d.Spec.Selector.MatchLabels; len(sel) == 0 || !isSubset(sel, d.Spec.Template.Labels) {
		t.Errorf("selector %v does not select the pod template's labels %v", sel, d.Spec.Template.Labels)
	}
	pod := d.Spec.Template.Spec
	if len(pod.Containers) != 1 {
		t.Fatalf("%d containers, want 1", len(pod.Containers))
	}
	c := pod.Containers[0]
	argv := append(slices.Clone(c.Command), c.Args...)
	wantArgv := []string{binary, "worker", "serve", "--nats", "$(NATS_URL)", "--config", configPath, "--data-dir", dataDir}
	if !slices.Equal(argv, wantArgv) {
		t.Errorf("command %q, want %q", argv, wantArgv)
	}

	// Environment: NATS_URL from the ConfigMap, credentials from Secrets
	// whose names and keys exist.
	env := map[string]corev1.EnvVar{}
	for _, e := range c.Env {
		env[e.Name] = e
	}
	nats := env["NATS_URL"].ValueFrom
	if nats == nil || nats.ConfigMapKeyRef == nil || nats.ConfigMapKeyRef.Name != m.config.Name || m.config.Data[nats.ConfigMapKeyRef.Key] == "" {
		t.Errorf("NATS_URL does not come from a key of ConfigMap %s: %+v", m.config.Name, nats)
	}
	for name, secret := range map[string]string{
		"CONVEYOR_S3_ACCESS_KEY_ID":      "conveyor-s3",
		"CONVEYOR_S3_SECRET_ACCESS_KEY":  "conveyor-s3",
		"CONVEYOR_CLUSTER_NATS_USER":     "conveyor-nats",
		"CONVEYOR_CLUSTER_NATS_PASSWORD": "conveyor-nats",
	} {
		vf := env[name].ValueFrom
		if env[name].Value != "" || vf == nil || vf.SecretKeyRef == nil || vf.SecretKeyRef.Name != secret {
			t.Errorf("%s does not come from Secret %s: %+v", name, secret, env[name])
			continue
		}
		s, ok := m.secrets[secret]
		if !ok {
			t.Errorf("Secret %s (read by %s) is not in secrets.example.yaml", secret, name)
		} else if _, ok := s.StringData[vf.SecretKeyRef.Key]; !ok {
			t.Errorf("Secret %s has no key %s (read by %s)", secret, vf.SecretKeyRef.Key, name)
		}
	}
	for _, e := range c.Env {
		if e.Value != "" && (strings.Contains(e.Name, "SECRET") || strings.Contains(e.Name, "PASSWORD")) {
			t.Errorf("%s holds a literal value; credentials come from Secrets", e.Name)
		}
	}

	// Hardening.
	psc := pod.SecurityContext
	if psc == nil || !isTrue(psc.RunAsNonRoot) || psc.RunAsUser == nil || *psc.RunAsUser != imageUID ||
		psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("pod securityContext %+v: want runAsNonRoot, runAsUser %d (the image's user), seccomp RuntimeDefault", psc, imageUID)
	}
	if psc != nil && (psc.FSGroup == nil || *psc.FSGroup != imageUID) {
		t.Errorf("fsGroup %v: the volume would not be writable for uid %d", psc.FSGroup, imageUID)
	}
	sc := c.SecurityContext
	if sc == nil || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation || !isTrue(sc.ReadOnlyRootFilesystem) ||
		isTrue(sc.Privileged) || sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) > 0 {
		t.Errorf("container securityContext %+v: want no privilege escalation, read-only root, all capabilities dropped", sc)
	}
	if pod.AutomountServiceAccountToken == nil || *pod.AutomountServiceAccountToken {
		t.Error("the worker needs no Kubernetes API token: automountServiceAccountToken must be false")
	}
	if pod.HostNetwork || pod.HostPID || pod.HostIPC {
		t.Error("the pod shares a host namespace")
	}

	// Resources: requests to schedule by, a memory limit (GOMEMLIMIT
	// follows it).
	req, lim := c.Resources.Requests, c.Resources.Limits
	if req.Cpu().IsZero() || req.Memory().IsZero() || lim.Memory().IsZero() {
		t.Errorf("resources %+v: want cpu and memory requests and a memory limit", c.Resources)
	}
	if gm := env["GOMEMLIMIT"].ValueFrom; gm == nil || gm.ResourceFieldRef == nil || gm.ResourceFieldRef.Resource != "limits.memory" {
		t.Errorf("GOMEMLIMIT does not follow the memory limit: %+v", gm)
	}

	// Stopping: time to hand running jobs back.
	if g := pod.TerminationGracePeriodSeconds; g == nil || *g < 60 {
		t.Errorf("terminationGracePeriodSeconds %v, want at least 60 to hand jobs back", g)
	}
	if c.Lifecycle != nil && c.Lifecycle.PreStop != nil {
		t.Error("a preStop hook delays the SIGTERM that makes worker serve hand its jobs back")
	}
	// worker serve serves no port: a probe on one would kill healthy pods.
	if len(c.Ports) > 0 || c.ReadinessProbe != nil || (c.LivenessProbe != nil && c.LivenessProbe.HTTPGet != nil) {
		t.Errorf("ports %v or HTTP probes on a worker that serves none", c.Ports)
	}

	// The volume per pod, mounted where --data-dir points; the read-only
	// root needs a writable /tmp; the configuration file is mounted.
	vols := map[string]corev1.Volume{}
	for _, v := range pod.Volumes {
		vols[v.Name] = v
		if v.PersistentVolumeClaim != nil {
			t.Errorf("volume %s is one claim shared by every pod; each pod needs its own", v.Name)
		}
	}
	mounts := map[string]corev1.VolumeMount{}
	for _, vm := range c.VolumeMounts {
		mounts[vm.MountPath] = vm
	}
	data := vols[mounts[dataDir].Name]
	if data.Ephemeral == nil || data.Ephemeral.VolumeClaimTemplate == nil {
		t.Fatalf("%s is not on a generic ephemeral volume (one claim per pod): %+v", dataDir, data)
	}
	spec := data.Ephemeral.VolumeClaimTemplate.Spec
	if !slices.Equal(spec.AccessModes, []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce}) {
		t.Errorf("access modes %v, want ReadWriteOnce", spec.AccessModes)
	}
	if s := spec.Resources.Requests[corev1.ResourceStorage]; s.Cmp(resource.MustParse("1Gi")) < 0 {
		t.Errorf("volume size %v, want at least 1Gi", s.String())
	}
	if mounts[dataDir].ReadOnly {
		t.Errorf("%s is mounted read-only", dataDir)
	}
	if tmp := vols[mounts["/tmp"].Name]; tmp.EmptyDir == nil {
		t.Errorf("/tmp is not a writable emptyDir under the read-only root: %+v", tmp)
	}
	cfg := vols[mounts[filepath.Dir(configPath)].Name]
	if cfg.ConfigMap == nil || cfg.ConfigMap.Name != m.config.Name {
		t.Errorf("%s is not mounted from ConfigMap %s", filepath.Dir(configPath), m.config.Name)
	}
}

// TestConfigMapLoads runs the configuration file in the ConfigMap through
// conveyor's own loader (worker prepare reads, validates and readies the
// processor without touching the store): a misspelt key fails here, not in
// a crash-looping pod.
func TestConfigMapLoads(t *testing.T) {
	m := load(t)
	if m.config.Name != configMapName {
		t.Fatalf("ConfigMap is named %q", m.config.Name)
	}
	file := filepath.Join(t.TempDir(), "conveyor.yaml")
	if err := os.WriteFile(file, []byte(m.config.Data["conveyor.yaml"]), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	getenv := func(string) string { return "" }
	code := cli.Run(context.Background(), []string{"worker", "prepare", "--config", file, "--data-dir", t.TempDir()}, &out, &errb, getenv)
	if code != 0 {
		t.Fatalf("conveyor worker prepare rejects the ConfigMap's conveyor.yaml (exit %d): %s", code, errb.String())
	}
	if url := m.config.Data["nats-url"]; !strings.HasPrefix(url, "nats://") && !strings.HasPrefix(url, "tls://") {
		t.Errorf("nats-url %q is not a NATS URL", url)
	}
}

// TestScaledObject: KEDA scales this Deployment on the backlog of the
// stream and consumer the workers use, with only the trigger fields KEDA
// documents, and a threshold tied to the pods' job slots.
func TestScaledObject(t *testing.T) {
	m := load(t)
	s := m.scaled
	if s.APIVersion != "keda.sh/v1alpha1" || s.Kind != "ScaledObject" {
		t.Fatalf("scaledobject.yaml is %s %s", s.APIVersion, s.Kind)
	}
	ref := s.Spec.ScaleTargetRef
	if ref.Kind != "Deployment" || ref.APIVersion != "apps/v1" || ref.Name != m.deploy.Name {
		t.Errorf("scaleTargetRef %+v, want the Deployment %s", ref, m.deploy.Name)
	}
	if s.Spec.MinReplicaCount == nil || s.Spec.MaxReplicaCount == nil || *s.Spec.MinReplicaCount < 0 || *s.Spec.MaxReplicaCount < *s.Spec.MinReplicaCount {
		t.Errorf("replica bounds %v..%v", s.Spec.MinReplicaCount, s.Spec.MaxReplicaCount)
	}
	if len(s.Spec.Triggers) != 1 || s.Spec.Triggers[0].Type != "nats-jetstream" {
		t.Fatalf("triggers %+v, want one nats-jetstream", s.Spec.Triggers)
	}
	md := s.Spec.Triggers[0].Metadata
	for k := range md {
		if !slices.Contains(kedaTriggerKeys, k) {
			t.Errorf("trigger metadata key %q is not one KEDA's nats-jetstream scaler documents (%v)", k, kedaTriggerKeys)
		}
	}
	for _, k := range kedaRequired {
		if md[k] == "" {
			t.Errorf("trigger metadata lacks %s", k)
		}
	}
	if md["stream"] != streamName || md["consumer"] != consumerName {
		t.Errorf("stream %q consumer %q, want %s and %s (the workers' defaults)", md["stream"], md["consumer"], streamName, consumerName)
	}
	if strings.Contains(md["natsServerMonitoringEndpoint"], "://") {
		t.Errorf("natsServerMonitoringEndpoint %q: KEDA wants host:port (useHttps says the scheme)", md["natsServerMonitoringEndpoint"])
	}
	// lagThreshold is the backlog per pod: two rounds of its job slots.
	var cfg struct {
		Workers int `yaml:"workers"`
	}
	if err := yaml.Unmarshal([]byte(m.config.Data["conveyor.yaml"]), &cfg); err != nil || cfg.Workers <= 0 {
		t.Fatalf("workers in the ConfigMap: %d, %v", cfg.Workers, err)
	}
	lag, err := strconv.Atoi(md["lagThreshold"])
	if err != nil || lag != 2*cfg.Workers {
		t.Errorf("lagThreshold %q, want 2 x workers = %d", md["lagThreshold"], 2*cfg.Workers)
	}
}

func isTrue(b *bool) bool { return b != nil && *b }

func isSubset(a, b map[string]string) bool {
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}
