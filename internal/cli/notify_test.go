package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestValidateNotifications(t *testing.T) {
	secretFile := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secretFile, []byte("0123456789abcdef-from-file\nignored second line\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		file string
		env  map[string]string
		want string // "" for valid
	}{
		{name: "embedded, nothing set", file: "workers: 1\n"},
		{name: "NATS without an endpoint", file: "notifications: {nats: {url: nats://127.0.0.1:4222}}\n", want: "set s3.endpoint"},
		{name: "webhook without an endpoint", file: "notifications: {webhook: {enabled: true, secret: 0123456789abcdef}}\n", want: "set s3.endpoint"},
		{name: "endpoint not a URL", file: "s3: {endpoint: 's3.example.com'}\n", want: "is not a URL"},
		{name: "endpoint with credentials", file: "s3: {endpoint: 'https://k:s@s3.example.com'}\n", want: "must not carry credentials"},
		{name: "external with NATS", file: "s3: {endpoint: 'https://s3.example.com'}\nnotifications: {nats: {url: nats://127.0.0.1:4222, user: u, password: p}}\n"},
		{name: "NATS user without password", file: "s3: {endpoint: 'https://s3.example.com'}\nnotifications: {nats: {url: nats://127.0.0.1:4222, user: u}}\n", want: "go together"},
		{name: "NATS creds and user", file: "s3: {endpoint: 'https://s3.example.com'}\nnotifications: {nats: {url: nats://h:4222, creds: /c, user: u, password: p}}\n", want: "not both"},
		{name: "webhook without a secret", file: "s3: {endpoint: 'https://s3.example.com'}\nnotifications: {webhook: {enabled: true}}\n", want: "CONVEYOR_NOTIFICATIONS_WEBHOOK_SECRET"},
		{name: "webhook short secret", file: "s3: {endpoint: 'https://s3.example.com'}\nnotifications: {webhook: {enabled: true, secret: short}}\n", want: "at least 16"},
		{name: "webhook secret by env", file: "s3: {endpoint: 'https://s3.example.com'}\nnotifications: {webhook: {enabled: true}}\n",
			env: map[string]string{"CONVEYOR_NOTIFICATIONS_WEBHOOK_SECRET": "0123456789abcdef"}},
		{name: "webhook secret file", file: "s3: {endpoint: 'https://s3.example.com'}\nnotifications: {webhook: {enabled: true, secret_file: " + secretFile + "}}\n"},
		{name: "webhook secret and file", file: "s3: {endpoint: 'https://s3.example.com'}\nnotifications: {webhook: {enabled: true, secret: 0123456789abcdef, secret_file: " + secretFile + "}}\n", want: "not both"},
		{name: "webhook secret file missing", file: "s3: {endpoint: 'https://s3.example.com'}\nnotifications: {webhook: {enabled: true, secret_file: /nonexistent/secret}}\n", want: "secret_file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := loadConfig(writeFile(t, tt.file), env(tt.env))
			if err != nil {
				t.Fatal(err)
			}
			err = c.validateNotifications()
			if tt.want == "" {
				if err != nil {
					t.Fatalf("valid configuration refused: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want one saying %q", err, tt.want)
			}
			if _, ok := err.(usageError); !ok {
				t.Errorf("%T is not a usage error (exit 2)", err)
			}
		})
	}
}

func TestWebhookSecretSources(t *testing.T) {
	secretFile := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secretFile, []byte("  0123456789abcdef-from-file  \nsecond\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := loadConfig(writeFile(t, "s3: {endpoint: 'https://s3.example.com'}\nnotifications: {webhook: {enabled: true, secret_file: "+secretFile+"}}\n"), env(nil))
	if err != nil {
		t.Fatal(err)
	}
	wc, err := c.webhookConfig()
	if err != nil {
		t.Fatal(err)
	}
	if wc.Secret != "0123456789abcdef-from-file" || wc.Addr != "127.0.0.1:9002" || wc.Path != "/s3/events" {
		t.Errorf("webhook config %+v: want the file's first line trimmed, loopback, /s3/events", wc)
	}
	// The variable overrides the file's secret setting.
	c, err = loadConfig(writeFile(t, "s3: {endpoint: 'https://s3.example.com'}\nnotifications: {webhook: {enabled: true, secret: aaaaaaaaaaaaaaaaaaaa}}\n"),
		env(map[string]string{"CONVEYOR_NOTIFICATIONS_WEBHOOK_SECRET": "bbbbbbbbbbbbbbbbbbbb"}))
	if err != nil {
		t.Fatal(err)
	}
	if wc, err := c.webhookConfig(); err != nil || wc.Secret != "bbbbbbbbbbbbbbbbbbbb" {
		t.Errorf("secret %q %v, want the variable's", wc.Secret, err)
	}
}
