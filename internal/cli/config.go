package cli

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// FileConfig is the YAML configuration file, conveyor.yaml. Every field
// can also be set by the CONVEYOR_* environment variable in its `env` tag,
// and the most used ones by flags.
type FileConfig struct {
	DataDir string `yaml:"data_dir" env:"CONVEYOR_DATA_DIR"`
	// Stack is an AWS stack (infra/) whose outputs name the buckets the
	// client commands use, on Amazon S3.
	Stack string `yaml:"stack" env:"CONVEYOR_STACK"`

	S3 struct {
		Addr            string `yaml:"addr" env:"CONVEYOR_S3_ADDR"`
		Endpoint        string `yaml:"endpoint" env:"CONVEYOR_S3_ENDPOINT"`
		AWS             bool   `yaml:"aws" env:"CONVEYOR_S3_AWS"`
		Region          string `yaml:"region" env:"CONVEYOR_S3_REGION"`
		AccessKeyID     string `yaml:"access_key_id" env:"CONVEYOR_S3_ACCESS_KEY_ID"`
		SecretAccessKey string `yaml:"secret_access_key" env:"CONVEYOR_S3_SECRET_ACCESS_KEY"`
		// CAFile is a PEM bundle of the CAs that sign s3.endpoint's TLS
		// certificate, for a store with a private CA.
		CAFile string `yaml:"ca_file" env:"CONVEYOR_S3_CA_FILE"`
	} `yaml:"s3"`

	Buckets struct {
		Input  string `yaml:"input" env:"CONVEYOR_INPUT_BUCKET"`
		Output string `yaml:"output" env:"CONVEYOR_OUTPUT_BUCKET"`
		State  string `yaml:"state" env:"CONVEYOR_STATE_BUCKET"`
	} `yaml:"buckets"`

	Filter struct {
		Prefixes []string `yaml:"prefixes" env:"CONVEYOR_FILTER_PREFIXES"`
		Suffixes []string `yaml:"suffixes" env:"CONVEYOR_FILTER_SUFFIXES"`
	} `yaml:"filter"`

	Processor struct {
		Name    string        `yaml:"name" env:"CONVEYOR_PROCESSOR"`
		Command []string      `yaml:"command" env:"CONVEYOR_PROCESSOR_COMMAND"`
		Timeout time.Duration `yaml:"timeout" env:"CONVEYOR_PROCESSOR_TIMEOUT"`
		// Sandbox is auto (default), required or off; Network lets a
		// sandboxed processor use the network (see processor.Config).
		Sandbox string `yaml:"sandbox" env:"CONVEYOR_PROCESSOR_SANDBOX"`
		Network bool   `yaml:"network" env:"CONVEYOR_PROCESSOR_NETWORK"`
		// Limits bound an external processor (see processor.Limits).
		Limits struct {
			Memory    sizeSetting   `yaml:"memory" env:"CONVEYOR_PROCESSOR_LIMITS_MEMORY"` // like 512MiB
			CPUTime   time.Duration `yaml:"cpu_time" env:"CONVEYOR_PROCESSOR_LIMITS_CPU_TIME"`
			OpenFiles int           `yaml:"open_files" env:"CONVEYOR_PROCESSOR_LIMITS_OPEN_FILES"`
			Processes int           `yaml:"processes" env:"CONVEYOR_PROCESSOR_LIMITS_PROCESSES"`
		} `yaml:"limits"`
		// Bundle is a processor bundle: a directory (relative to the
		// config file) or a .zip of one; see internal/bundle and bundle.go.
		Bundle       string `yaml:"bundle" env:"CONVEYOR_PROCESSOR_BUNDLE"`
		BundleSHA256 string `yaml:"bundle_sha256" env:"CONVEYOR_PROCESSOR_BUNDLE_SHA256"`
	} `yaml:"processor"`

	Workers int    `yaml:"workers" env:"CONVEYOR_WORKERS"`
	Volume  string `yaml:"volume" env:"CONVEYOR_VOLUME"`

	Retry struct {
		MaxAttempts int           `yaml:"max_attempts" env:"CONVEYOR_RETRY_MAX_ATTEMPTS"`
		Backoff     time.Duration `yaml:"backoff" env:"CONVEYOR_RETRY_BACKOFF"`
		MaxBackoff  time.Duration `yaml:"max_backoff" env:"CONVEYOR_RETRY_MAX_BACKOFF"`
	} `yaml:"retry"`

	Reconcile struct {
		Interval   time.Duration `yaml:"interval" env:"CONVEYOR_RECONCILE_INTERVAL"`
		Budget     time.Duration `yaml:"budget" env:"CONVEYOR_RECONCILE_BUDGET"`
		SweepEvery time.Duration `yaml:"sweep_every" env:"CONVEYOR_RECONCILE_SWEEP_EVERY"`
	} `yaml:"reconcile"`

	// Retention says how long finished job records stay (the reconciler
	// removes older ones; on AWS a lifecycle rule does).
	Retention struct {
		Finished time.Duration `yaml:"finished" env:"CONVEYOR_RETENTION_FINISHED"`
	} `yaml:"retention"`

	// Worker tunes how one attempt runs (see worker.Config).
	Worker struct {
		Lease        time.Duration `yaml:"lease" env:"CONVEYOR_WORKER_LEASE"`
		StallTimeout time.Duration `yaml:"stall_timeout" env:"CONVEYOR_WORKER_STALL_TIMEOUT"`
		LogMaxBytes  int64         `yaml:"log_max_bytes" env:"CONVEYOR_WORKER_LOG_MAX_BYTES"`
	} `yaml:"worker"`

	// Snapshot configures volume snapshots (see `conveyor snapshot --help`).
	// The schedule is off unless every or daily is set.
	Snapshot struct {
		Every     time.Duration `yaml:"every" env:"CONVEYOR_SNAPSHOT_EVERY"`
		Daily     string        `yaml:"daily" env:"CONVEYOR_SNAPSHOT_DAILY"` // "HH:MM", local time
		Quiesce   bool          `yaml:"quiesce" env:"CONVEYOR_SNAPSHOT_QUIESCE"`
		Bucket    string        `yaml:"bucket" env:"CONVEYOR_SNAPSHOT_BUCKET"` // default: buckets.state
		Prefix    string        `yaml:"prefix" env:"CONVEYOR_SNAPSHOT_PREFIX"` // default: snapshots/
		Retention struct {
			KeepLast   int           `yaml:"keep_last" env:"CONVEYOR_SNAPSHOT_KEEP_LAST"`
			KeepWithin time.Duration `yaml:"keep_within" env:"CONVEYOR_SNAPSHOT_KEEP_WITHIN"`
			KeepDaily  int           `yaml:"keep_daily" env:"CONVEYOR_SNAPSHOT_KEEP_DAILY"`
			KeepWeekly int           `yaml:"keep_weekly" env:"CONVEYOR_SNAPSHOT_KEEP_WEEKLY"`

			KeepHourly  int `yaml:"keep_hourly" env:"CONVEYOR_SNAPSHOT_KEEP_HOURLY"`
			KeepMonthly int `yaml:"keep_monthly" env:"CONVEYOR_SNAPSHOT_KEEP_MONTHLY"`
			KeepYearly  int `yaml:"keep_yearly" env:"CONVEYOR_SNAPSHOT_KEEP_YEARLY"`
			// KeepTags keeps every snapshot with one of these tags
			// ("k=v", or "k" for any value).
			KeepTags []string `yaml:"keep_tags" env:"CONVEYOR_SNAPSHOT_KEEP_TAGS"`
		} `yaml:"retention"`

		// PruneEvery: a scheduled run applies retention every time, and
		// prunes (reads and rewrites packs) only this often, or once
		// pruneAfterForgotten snapshots were removed; default 24h.
		PruneEvery time.Duration `yaml:"prune_every" env:"CONVEYOR_SNAPSHOT_PRUNE_EVERY"`

		// PasswordFile holds the password that wraps the snapshot
		// repository's key (first line). CONVEYOR_SNAPSHOT_PASSWORD,
		// when set, comes first; with neither, `conveyor up` generates
		// <data dir>/snapshot-password.
		PasswordFile string `yaml:"password_file" env:"CONVEYOR_SNAPSHOT_PASSWORD_FILE"`

		// KMSKey, when set, is the AWS KMS key (key ID, key ARN,
		// alias/name or alias ARN) that wraps the snapshot repository's
		// key instead of a password: opening the repository takes
		// kms:Decrypt on it, creating one kms:Encrypt. Setting a password
		// too is refused. Credentials: the usual AWS chain (the instance
		// role on EC2) in s3.region.
		KMSKey string `yaml:"kms_key" env:"CONVEYOR_SNAPSHOT_KMS_KEY"`
	} `yaml:"snapshot"`

	// Events puts every job state change this process makes on an
	// EventBridge bus (see internal/jobevents); off unless Bus is set.
	// Credentials and region come as for s3.aws.
	Events struct {
		Bus string `yaml:"bus" env:"CONVEYOR_EVENTS_BUS"` // "default", a bus name or ARN
	} `yaml:"events"`
	// Logs sends each attempt's part of a job's log to a CloudWatch Logs
	// group (a stream per attempt, "<job>/<attempt>"); off unless Group is
	// set. Credentials and region come as for s3.aws.
	Logs struct {
		Group string `yaml:"group" env:"CONVEYOR_LOGS_GROUP"`
	} `yaml:"logs"`
	// Metrics writes job metrics in CloudWatch embedded metric format,
	// one JSON line each, to the standard output of `worker run` (SSM Run
	// Command sends it to CloudWatch Logs, which extracts them).
	Metrics struct {
		EMF bool `yaml:"emf" env:"CONVEYOR_METRICS_EMF"`
		// Addr, when set, is where `conveyor up` serves its Prometheus
		// metrics (http://<addr>/metrics); otherwise the dashboard serves
		// them at /metrics, behind its own token. Token is required on a
		// non-loopback Addr, sent by Prometheus as a bearer token.
		Addr  string `yaml:"addr" env:"CONVEYOR_METRICS_ADDR"`
		Token string `yaml:"token" env:"CONVEYOR_METRICS_TOKEN"`
	} `yaml:"metrics"`
	// Notify POSTs every job state change of `conveyor up` to each
	// webhook, signed (see internal/notify and the README's Webhooks).
	Notify struct {
		Webhooks []webhookConfig `yaml:"webhooks"`
	} `yaml:"notify"`
	// Notifications say where `conveyor up` takes bucket notifications
	// from when s3.endpoint names a store of its own (see the README's
	// "Your own S3-compatible store" and notify.go).
	Notifications struct {
		NATS struct {
			URL      string `yaml:"url" env:"CONVEYOR_NOTIFICATIONS_NATS_URL"`
			Subject  string `yaml:"subject" env:"CONVEYOR_NOTIFICATIONS_NATS_SUBJECT"`
			Creds    string `yaml:"creds" env:"CONVEYOR_NOTIFICATIONS_NATS_CREDS"`
			User     string `yaml:"user" env:"CONVEYOR_NOTIFICATIONS_NATS_USER"`
			Password string `yaml:"password" env:"CONVEYOR_NOTIFICATIONS_NATS_PASSWORD"`
			CAFile   string `yaml:"ca_file" env:"CONVEYOR_NOTIFICATIONS_NATS_CA_FILE"`
		} `yaml:"nats"`
		Webhook struct {
			Enabled    bool   `yaml:"enabled" env:"CONVEYOR_NOTIFICATIONS_WEBHOOK_ENABLED"`
			Addr       string `yaml:"addr" env:"CONVEYOR_NOTIFICATIONS_WEBHOOK_ADDR"`
			Path       string `yaml:"path" env:"CONVEYOR_NOTIFICATIONS_WEBHOOK_PATH"`
			Secret     string `yaml:"secret" env:"CONVEYOR_NOTIFICATIONS_WEBHOOK_SECRET"`
			SecretFile string `yaml:"secret_file" env:"CONVEYOR_NOTIFICATIONS_WEBHOOK_SECRET_FILE"`
		} `yaml:"webhook"`
	} `yaml:"notifications"`
	Dashboard struct {
		// Addr is where `conveyor up` serves the web page; "off" turns it
		// off. A non-loopback address requires Token (generated and
		// printed at start when empty).
		Addr  string `yaml:"addr" env:"CONVEYOR_DASHBOARD_ADDR"`
		Token string `yaml:"token" env:"CONVEYOR_DASHBOARD_TOKEN"`
	} `yaml:"dashboard"`

	// Cluster spreads jobs over workers on many machines through NATS
	// JetStream (cluster_nats.go): `conveyor up` publishes job IDs to a
	// work-queue stream and `conveyor worker serve` processes pull them.
	Cluster struct {
		// NATS is "" (off), "embedded" (conveyor up runs a NATS server) or
		// server URLs: nats://host:4222, tls://host:4222, comma-separated.
		NATS string `yaml:"nats" env:"CONVEYOR_CLUSTER_NATS"`
		// NATSAddr is where the embedded server listens (default
		// 127.0.0.1:4222).
		NATSAddr string `yaml:"nats_addr" env:"CONVEYOR_CLUSTER_NATS_ADDR"`
		// NATSUser and NATSPassword, or NATSCreds (a credentials file),
		// authenticate; with the embedded server they default to the ones
		// stored in <data dir>/nats-credentials.json.
		NATSUser     string `yaml:"nats_user" env:"CONVEYOR_CLUSTER_NATS_USER"`
		NATSPassword string `yaml:"nats_password" env:"CONVEYOR_CLUSTER_NATS_PASSWORD"`
		NATSCreds    string `yaml:"nats_creds" env:"CONVEYOR_CLUSTER_NATS_CREDS"`
		// NATSCA is a PEM file of the CAs of the servers' TLS certificates.
		NATSCA string `yaml:"nats_ca" env:"CONVEYOR_CLUSTER_NATS_CA"`
		// NATSStream, NATSSubject and NATSReplicas name and keep the
		// stream (defaults CONVEYOR_JOBS, conveyor.jobs, 1).
		NATSStream   string `yaml:"nats_stream" env:"CONVEYOR_CLUSTER_NATS_STREAM"`
		NATSSubject  string `yaml:"nats_subject" env:"CONVEYOR_CLUSTER_NATS_SUBJECT"`
		NATSReplicas int    `yaml:"nats_replicas" env:"CONVEYOR_CLUSTER_NATS_REPLICAS"`
	} `yaml:"cluster"`

	// getenv is how the configuration was read (AWS endpoint overrides
	// of --stack); nil is os.Getenv's absence: nothing set.
	getenv func(string) string
	// source is the configuration file read, absolute; "" when none was.
	// The processor's sandbox hides it (it may hold credentials).
	source string
	// bundleOpened is where the processor bundle runs from once opened
	// (prepareProcessor); no file or variable sets it.
	bundleOpened string
}

// Defaults of FileConfig.
const (
	DefaultDataDir = "conveyor-data"
	DefaultS3Addr  = "127.0.0.1:9000"
	// DefaultDashboardAddr is where the dashboard listens unless told.
	DefaultDashboardAddr = "127.0.0.1:9001"
	DefaultRegion        = "us-east-1"
	DefaultConfig        = "conveyor.yaml"
)

func defaultFileConfig() FileConfig {
	var c FileConfig
	c.DataDir = DefaultDataDir
	c.S3.Addr = DefaultS3Addr
	c.Dashboard.Addr = DefaultDashboardAddr
	c.S3.Region = DefaultRegion
	c.Buckets.Input, c.Buckets.Output, c.Buckets.State = "input", "output", "state"
	c.Processor.Name = "report"
	c.Retention.Finished = 30 * 24 * time.Hour
	c.Workers = runtime.NumCPU()
	// Retention like a DLM policy: a week of dailies, a month of weeklies.
	c.Snapshot.Retention.KeepLast = 7
	c.Snapshot.Retention.KeepDaily = 7
	c.Snapshot.Retention.KeepWeekly = 4
	return c
}

// loadConfig reads the configuration: defaults, then the YAML file (path
// given, or ./conveyor.yaml when it exists), then CONVEYOR_* variables.
// Flags are applied by the caller. DataDir comes back absolute.
func loadConfig(path string, getenv func(string) string) (FileConfig, error) {
	c := defaultFileConfig()
	if path == "" {
		path = getenv("CONVEYOR_CONFIG")
	}
	explicit := path != ""
	if !explicit {
		path = DefaultConfig
	}
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		c.source, _ = filepath.Abs(path)
		dec := yaml.NewDecoder(strings.NewReader(string(b)))
		dec.KnownFields(true)
		if err := dec.Decode(&c); err != nil && !errors.Is(err, io.EOF) {
			return c, usageErrorf("config file %s: %v; see the README's configuration section", path, yamlMessage(err))
		}
	case explicit || !errors.Is(err, os.ErrNotExist):
		return c, usageErrorf("read config file: %v", err)
	}
	if c.Processor.Bundle != "" && !filepath.IsAbs(c.Processor.Bundle) {
		// A bundle named in the file is found beside the file, wherever
		// the command runs (make -C infra deploy reads it from infra/).
		c.Processor.Bundle = filepath.Join(filepath.Dir(path), c.Processor.Bundle)
	}
	if err := applyEnv(&c, getenv); err != nil {
		return c, err
	}
	c.getenv = getenv
	return c, nil
}

// unknownField matches yaml.v3's "field x not found in type struct {...}".
var unknownField = regexp.MustCompile(`field (\S+) not found in type .*`)

// yamlMessage turns yaml.v3's messages into one line a person can act on.
func yamlMessage(err error) string {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	msg = strings.TrimPrefix(msg, "unmarshal errors:\n")
	var lines []string
	for _, l := range strings.Split(msg, "\n") {
		l = strings.TrimSpace(l)
		l = strings.Replace(l, "cannot unmarshal !!str", "cannot use", 1)
		l = strings.Replace(l, "into time.Duration", "as a duration (use a value like 90s, 5m or 1h)", 1)
		l = strings.Replace(l, "into int", "as a whole number", 1)
		l = unknownField.ReplaceAllString(l, "unknown setting $1")
		if l != "" {
			lines = append(lines, l)
		}
	}
	return strings.Join(lines, "; ")
}

// absDataDir makes the data dir absolute: the embedded S3 server changes
// the working directory, so no relative path may survive start-up.
func absDataDir(c *FileConfig) error {
	d, err := filepath.Abs(c.DataDir)
	if err != nil {
		return err
	}
	c.DataDir = d
	if c.Volume != "" {
		if c.Volume, err = filepath.Abs(c.Volume); err != nil {
			return err
		}
	}
	if c.Processor.Bundle != "" {
		if c.Processor.Bundle, err = filepath.Abs(c.Processor.Bundle); err != nil {
			return err
		}
	}
	if c.Snapshot.PasswordFile != "" {
		if c.Snapshot.PasswordFile, err = filepath.Abs(c.Snapshot.PasswordFile); err != nil {
			return err
		}
	}
	return nil
}

// envField is one setting reachable by an environment variable.
type envField struct {
	name string
	set  func(string) error
}

func envFields(c *FileConfig) []envField {
	str := func(p *string) func(string) error { return func(v string) error { *p = v; return nil } }
	list := func(p *[]string) func(string) error {
		return func(v string) error { *p = splitList(v); return nil }
	}
	dur := func(name string, p *time.Duration) func(string) error {
		return func(v string) error {
			d, err := time.ParseDuration(v)
			if err != nil {
				return usageErrorf("%s=%q is not a duration; use a value like 90s, 5m or 1h", name, v)
			}
			*p = d
			return nil
		}
	}
	boolean := func(name string, p *bool) func(string) error {
		return func(v string) error {
			b, err := strconv.ParseBool(v)
			if err != nil {
				return usageErrorf("%s=%q is not true or false", name, v)
			}
			*p = b
			return nil
		}
	}
	num := func(name string, p *int) func(string) error {
		return func(v string) error {
			n, err := strconv.Atoi(v)
			if err != nil {
				return usageErrorf("%s=%q is not a whole number", name, v)
			}
			*p = n
			return nil
		}
	}
	return []envField{
		{"CONVEYOR_DATA_DIR", str(&c.DataDir)},
		{"CONVEYOR_STACK", str(&c.Stack)},
		{"CONVEYOR_S3_ADDR", str(&c.S3.Addr)},
		{"CONVEYOR_S3_ENDPOINT", str(&c.S3.Endpoint)},
		{"CONVEYOR_S3_AWS", boolean("CONVEYOR_S3_AWS", &c.S3.AWS)},
		{"CONVEYOR_S3_REGION", str(&c.S3.Region)},
		{"CONVEYOR_S3_ACCESS_KEY_ID", str(&c.S3.AccessKeyID)},
		{"CONVEYOR_S3_SECRET_ACCESS_KEY", str(&c.S3.SecretAccessKey)},
		{"CONVEYOR_S3_CA_FILE", str(&c.S3.CAFile)},
		{"CONVEYOR_INPUT_BUCKET", str(&c.Buckets.Input)},
		{"CONVEYOR_OUTPUT_BUCKET", str(&c.Buckets.Output)},
		{"CONVEYOR_STATE_BUCKET", str(&c.Buckets.State)},
		{"CONVEYOR_FILTER_PREFIXES", list(&c.Filter.Prefixes)},
		{"CONVEYOR_FILTER_SUFFIXES", list(&c.Filter.Suffixes)},
		{"CONVEYOR_PROCESSOR", str(&c.Processor.Name)},
		{"CONVEYOR_PROCESSOR_COMMAND", func(v string) error { c.Processor.Command = strings.Fields(v); return nil }},
		{"CONVEYOR_PROCESSOR_TIMEOUT", dur("CONVEYOR_PROCESSOR_TIMEOUT", &c.Processor.Timeout)},
		{"CONVEYOR_PROCESSOR_SANDBOX", str(&c.Processor.Sandbox)},
		{"CONVEYOR_PROCESSOR_NETWORK", boolean("CONVEYOR_PROCESSOR_NETWORK", &c.Processor.Network)},
		{"CONVEYOR_PROCESSOR_LIMITS_MEMORY", func(v string) error {
			return c.Processor.Limits.Memory.set("CONVEYOR_PROCESSOR_LIMITS_MEMORY=", v)
		}},
		{"CONVEYOR_PROCESSOR_LIMITS_CPU_TIME", dur("CONVEYOR_PROCESSOR_LIMITS_CPU_TIME", &c.Processor.Limits.CPUTime)},
		{"CONVEYOR_PROCESSOR_LIMITS_OPEN_FILES", num("CONVEYOR_PROCESSOR_LIMITS_OPEN_FILES", &c.Processor.Limits.OpenFiles)},
		{"CONVEYOR_PROCESSOR_LIMITS_PROCESSES", num("CONVEYOR_PROCESSOR_LIMITS_PROCESSES", &c.Processor.Limits.Processes)},
		{"CONVEYOR_PROCESSOR_BUNDLE", str(&c.Processor.Bundle)},
		{"CONVEYOR_PROCESSOR_BUNDLE_SHA256", str(&c.Processor.BundleSHA256)},
		{"CONVEYOR_WORKERS", num("CONVEYOR_WORKERS", &c.Workers)},
		{"CONVEYOR_VOLUME", str(&c.Volume)},
		{"CONVEYOR_RETRY_MAX_ATTEMPTS", num("CONVEYOR_RETRY_MAX_ATTEMPTS", &c.Retry.MaxAttempts)},
		{"CONVEYOR_RETRY_BACKOFF", dur("CONVEYOR_RETRY_BACKOFF", &c.Retry.Backoff)},
		{"CONVEYOR_RETRY_MAX_BACKOFF", dur("CONVEYOR_RETRY_MAX_BACKOFF", &c.Retry.MaxBackoff)},
		{"CONVEYOR_RECONCILE_INTERVAL", dur("CONVEYOR_RECONCILE_INTERVAL", &c.Reconcile.Interval)},
		{"CONVEYOR_RECONCILE_BUDGET", dur("CONVEYOR_RECONCILE_BUDGET", &c.Reconcile.Budget)},
		{"CONVEYOR_RECONCILE_SWEEP_EVERY", dur("CONVEYOR_RECONCILE_SWEEP_EVERY", &c.Reconcile.SweepEvery)},
		{"CONVEYOR_RETENTION_FINISHED", dur("CONVEYOR_RETENTION_FINISHED", &c.Retention.Finished)},
		{"CONVEYOR_WORKER_LEASE", dur("CONVEYOR_WORKER_LEASE", &c.Worker.Lease)},
		{"CONVEYOR_WORKER_STALL_TIMEOUT", dur("CONVEYOR_WORKER_STALL_TIMEOUT", &c.Worker.StallTimeout)},
		{"CONVEYOR_WORKER_LOG_MAX_BYTES", func(v string) error {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return usageErrorf("CONVEYOR_WORKER_LOG_MAX_BYTES=%q is not a whole number", v)
			}
			c.Worker.LogMaxBytes = n
			return nil
		}},
		{"CONVEYOR_SNAPSHOT_EVERY", dur("CONVEYOR_SNAPSHOT_EVERY", &c.Snapshot.Every)},
		{"CONVEYOR_SNAPSHOT_DAILY", str(&c.Snapshot.Daily)},
		{"CONVEYOR_SNAPSHOT_QUIESCE", boolean("CONVEYOR_SNAPSHOT_QUIESCE", &c.Snapshot.Quiesce)},
		{"CONVEYOR_SNAPSHOT_BUCKET", str(&c.Snapshot.Bucket)},
		{"CONVEYOR_SNAPSHOT_PREFIX", str(&c.Snapshot.Prefix)},
		{"CONVEYOR_SNAPSHOT_PASSWORD_FILE", str(&c.Snapshot.PasswordFile)},
		{"CONVEYOR_SNAPSHOT_KMS_KEY", str(&c.Snapshot.KMSKey)},
		{"CONVEYOR_SNAPSHOT_KEEP_LAST", num("CONVEYOR_SNAPSHOT_KEEP_LAST", &c.Snapshot.Retention.KeepLast)},
		{"CONVEYOR_SNAPSHOT_KEEP_WITHIN", dur("CONVEYOR_SNAPSHOT_KEEP_WITHIN", &c.Snapshot.Retention.KeepWithin)},
		{"CONVEYOR_SNAPSHOT_KEEP_DAILY", num("CONVEYOR_SNAPSHOT_KEEP_DAILY", &c.Snapshot.Retention.KeepDaily)},
		{"CONVEYOR_SNAPSHOT_KEEP_WEEKLY", num("CONVEYOR_SNAPSHOT_KEEP_WEEKLY", &c.Snapshot.Retention.KeepWeekly)},
		{"CONVEYOR_SNAPSHOT_KEEP_HOURLY", num("CONVEYOR_SNAPSHOT_KEEP_HOURLY", &c.Snapshot.Retention.KeepHourly)},
		{"CONVEYOR_SNAPSHOT_KEEP_MONTHLY", num("CONVEYOR_SNAPSHOT_KEEP_MONTHLY", &c.Snapshot.Retention.KeepMonthly)},
		{"CONVEYOR_SNAPSHOT_KEEP_YEARLY", num("CONVEYOR_SNAPSHOT_KEEP_YEARLY", &c.Snapshot.Retention.KeepYearly)},
		{"CONVEYOR_SNAPSHOT_KEEP_TAGS", list(&c.Snapshot.Retention.KeepTags)},
		{"CONVEYOR_SNAPSHOT_PRUNE_EVERY", dur("CONVEYOR_SNAPSHOT_PRUNE_EVERY", &c.Snapshot.PruneEvery)},
		{"CONVEYOR_EVENTS_BUS", str(&c.Events.Bus)},
		{"CONVEYOR_LOGS_GROUP", str(&c.Logs.Group)},
		{"CONVEYOR_METRICS_EMF", boolean("CONVEYOR_METRICS_EMF", &c.Metrics.EMF)},
		{"CONVEYOR_METRICS_ADDR", str(&c.Metrics.Addr)},
		{"CONVEYOR_METRICS_TOKEN", str(&c.Metrics.Token)},
		{"CONVEYOR_NOTIFICATIONS_NATS_URL", str(&c.Notifications.NATS.URL)},
		{"CONVEYOR_NOTIFICATIONS_NATS_SUBJECT", str(&c.Notifications.NATS.Subject)},
		{"CONVEYOR_NOTIFICATIONS_NATS_CREDS", str(&c.Notifications.NATS.Creds)},
		{"CONVEYOR_NOTIFICATIONS_NATS_USER", str(&c.Notifications.NATS.User)},
		{"CONVEYOR_NOTIFICATIONS_NATS_PASSWORD", str(&c.Notifications.NATS.Password)},
		{"CONVEYOR_NOTIFICATIONS_NATS_CA_FILE", str(&c.Notifications.NATS.CAFile)},
		{"CONVEYOR_NOTIFICATIONS_WEBHOOK_ENABLED", boolean("CONVEYOR_NOTIFICATIONS_WEBHOOK_ENABLED", &c.Notifications.Webhook.Enabled)},
		{"CONVEYOR_NOTIFICATIONS_WEBHOOK_ADDR", str(&c.Notifications.Webhook.Addr)},
		{"CONVEYOR_NOTIFICATIONS_WEBHOOK_PATH", str(&c.Notifications.Webhook.Path)},
		{"CONVEYOR_NOTIFICATIONS_WEBHOOK_SECRET", str(&c.Notifications.Webhook.Secret)},
		{"CONVEYOR_NOTIFICATIONS_WEBHOOK_SECRET_FILE", str(&c.Notifications.Webhook.SecretFile)},
		{"CONVEYOR_DASHBOARD_ADDR", str(&c.Dashboard.Addr)},
		{"CONVEYOR_DASHBOARD_TOKEN", str(&c.Dashboard.Token)},
		{"CONVEYOR_CLUSTER_NATS", str(&c.Cluster.NATS)},
		{"CONVEYOR_CLUSTER_NATS_ADDR", str(&c.Cluster.NATSAddr)},
		{"CONVEYOR_CLUSTER_NATS_USER", str(&c.Cluster.NATSUser)},
		{"CONVEYOR_CLUSTER_NATS_PASSWORD", str(&c.Cluster.NATSPassword)},
		{"CONVEYOR_CLUSTER_NATS_CREDS", str(&c.Cluster.NATSCreds)},
		{"CONVEYOR_CLUSTER_NATS_CA", str(&c.Cluster.NATSCA)},
		{"CONVEYOR_CLUSTER_NATS_STREAM", str(&c.Cluster.NATSStream)},
		{"CONVEYOR_CLUSTER_NATS_SUBJECT", str(&c.Cluster.NATSSubject)},
		{"CONVEYOR_CLUSTER_NATS_REPLICAS", num("CONVEYOR_CLUSTER_NATS_REPLICAS", &c.Cluster.NATSReplicas)},
	}
}

func applyEnv(c *FileConfig, getenv func(string) string) error {
	for _, f := range envFields(c) {
		if v := getenv(f.name); v != "" {
			if err := f.set(v); err != nil {
				return err
			}
		}
	}
	return nil
}

func splitList(v string) []string {
	var out []string
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

// validate checks what no component checks for itself.
func (c *FileConfig) validate() error {
	if c.Workers < 0 || c.Workers > 256 || c.Workers == 0 && c.Cluster.NATS == "" {
		return usageErrorf("workers must be between 1 and 256 (0 only with cluster.nats: conveyor up then coordinates and runs no job), got %d", c.Workers)
	}
	if c.Buckets.Input == c.Buckets.Output {
		return usageErrorf("buckets.input and buckets.output must differ (both are %q): outputs would trigger new jobs", c.Buckets.Input)
	}
	if c.Buckets.State == c.Buckets.Input || c.Buckets.State == c.Buckets.Output {
		return usageErrorf("buckets.state must differ from buckets.input and buckets.output (it is %q): job records written there would trigger jobs or mix with results", c.Buckets.State)
	}
	if c.Reconcile.Interval < 0 || c.Reconcile.Budget < 0 || c.Reconcile.SweepEvery < 0 {
		return usageErrorf("reconcile.interval, budget and sweep_every must be positive, got %s, %s, %s", c.Reconcile.Interval, c.Reconcile.Budget, c.Reconcile.SweepEvery)
	}
	if c.Retention.Finished < 0 || c.Retention.Finished > 0 && c.Retention.Finished < time.Hour {
		return usageErrorf("retention.finished must be at least 1h (or 0 to keep every record), got %s", c.Retention.Finished)
	}
	if err := c.snapshotValidate(); err != nil {
		return err
	}
	return nil
}

// errUsage marks errors caused by the command line or configuration.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usageErrorf(format string, args ...any) error {
	return usageError{fmt.Sprintf(format, args...)}
}
