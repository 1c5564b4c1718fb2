package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"testing"

	"github.com/aws/aws-cdk-go/awscdk/v2/assertions"
	"github.com/aws/aws-cdk-go/awscdk/v2/cxapi"
	"github.com/aws/jsii-runtime-go"
)

// The stack is synthesized once per test binary (jsii start-up and synthesis
// take seconds); every test reads these.
var (
	synth struct {
		conveyor        *Conveyor
		assembly        cxapi.CloudAssembly
		template        assertions.Template
		annotations     assertions.Annotations
		json            map[string]interface{} // the template as plain Go values
		dir             string                 // the temp dir holding assets and cdk.out
		ssmDocumentPath string                 // the document the stack was built from
		props           StackProps             // what the stack was built from
	}
)

func TestMain(m *testing.M) {
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	defer jsii.Close()
	dir, err := os.MkdirTemp("", "conveyor-infra-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	if err := synthesize(dir); err != nil {
		fmt.Fprintln(os.Stderr, "synthesize:", err)
		return 1
	}
	return m.Run()
}

// synthesize builds the stack as `cdk synth` does, with no AWS credentials
// in the environment, from placeholder assets when the real ones are not
// built, and the real SSM document when the repo has it.
func synthesize(dir string) error {
	for _, k := range []string{"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_REGION", "AWS_DEFAULT_REGION", "CDK_DEFAULT_ACCOUNT", "CDK_DEFAULT_REGION"} {
		os.Unsetenv(k)
	}
	os.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	os.Setenv("AWS_CONFIG_FILE", filepath.Join(dir, "no-aws-config"))
	os.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(dir, "no-aws-credentials"))

	props, err := fixtureProps(dir)
	if err != nil {
		return err
	}
	app := newApp(filepath.Join(dir, "cdk.out"))
	c := NewConveyorStack(app, "Conveyor", props)
	synth.conveyor = c
	synth.assembly = app.Synth(synthOptions)
	synth.template = assertions.Template_FromStack(c.Stack, nil)
	synth.annotations = assertions.Annotations_FromStack(c.Stack)
	raw, err := json.Marshal(synth.template.ToJSON())
	if err != nil {
		return err
	}
	synth.dir = dir
	synth.ssmDocumentPath = props.SSMDocumentPath
	synth.props = props
	return json.Unmarshal(raw, &synth.json)
}

// placeholderSSMDocument stands in for deploy/ssm/conveyor-run-job.yaml while
// that file is not in the repo; it has the same shape.
const placeholderSSMDocument = `schemaVersion: "2.2"
description: Run one Conveyor job on this worker (placeholder for tests).
parameters:
  JobId:
    type: String
    description: The job ID (32 lowercase hex digits).
    allowedPattern: ^[0-9a-f]{32}$
    interpolationType: ENV_VAR
  ExecutionTimeout:
    type: String
    default: "3600"
    allowedPattern: ^[0-9]{1,6}$
mainSteps:
  - action: aws:runShellScript
    name: runJob
    inputs:
      timeoutSeconds: "{{ ExecutionTimeout }}"
      runCommand:
        - /usr/local/bin/conveyor worker --job "$SSM_JobId"
`

// fixtureImageID stands for the AMI cdk.json pins.
const fixtureImageID = "ami-0123456789abcdef0"

// exampleBundle is the bundle the fixture configuration deploys.
const exampleBundle = "../examples/pdftotext"

// fixtureConfig is the conveyor.yaml the tests deploy (%s: the bundle). It
// also holds settings of the local home, which the stack ignores.
const fixtureConfig = `# as used with conveyor up
s3: {addr: "127.0.0.1:9100"}
dashboard: {addr: "off"}
filter:
  prefixes: [incoming/, scans/]
  suffixes: [.pdf, .PDF]
processor:
  bundle: %q
  timeout: 20m
retry: {max_attempts: 4, backoff: 5s}
`

// fixtureProps returns stack props whose assets exist: the real build
// outputs when present, small placeholders in dir otherwise.
func fixtureProps(dir string) (StackProps, error) {
	p := StackProps{}.WithDefaults()
	// The pinned AMI, as cdk.json would give it.
	p.WorkerImageID = fixtureImageID
	if _, err := os.Stat(filepath.Join(p.LambdaAssetDir, "bootstrap")); err != nil {
		p.LambdaAssetDir = filepath.Join(dir, "lambda")
		if err := writeFile(filepath.Join(p.LambdaAssetDir, "bootstrap"), "#!/bin/sh\necho placeholder\n", 0o755); err != nil {
			return p, err
		}
	}
	if _, err := os.Stat(p.WorkerBinary); err != nil {
		p.WorkerBinary = filepath.Join(dir, "linux-arm64", "conveyor")
		if err := writeFile(p.WorkerBinary, "placeholder worker binary\n", 0o755); err != nil {
			return p, err
		}
	}
	// The conveyor.yaml deployed: filters, retries and the example bundle.
	bundleDir, err := filepath.Abs(exampleBundle)
	if err != nil {
		return p, err
	}
	p.ConfigPath = filepath.Join(dir, "conveyor.yaml")
	if err := writeFile(p.ConfigPath, fmt.Sprintf(fixtureConfig, bundleDir), 0o644); err != nil {
		return p, err
	}
	if _, err := os.Stat(p.SSMDocumentPath); err != nil {
		p.SSMDocumentPath = filepath.Join(dir, "conveyor-run-job.yaml")
		if err := writeFile(p.SSMDocumentPath, placeholderSSMDocument, 0o644); err != nil {
			return p, err
		}
	}
	return p, nil
}

func writeFile(path, content string, mode os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return os.WriteFile(path, []byte(content), mode)
}

// resources returns the template's resources of a CloudFormation type, by
// logical ID.
func resources(typ string) map[string]map[string]interface{} {
	out := map[string]map[string]interface{}{}
	for id, r := range synth.json["Resources"].(map[string]interface{}) {
		res := r.(map[string]interface{})
		if res["Type"] == typ {
			out[id] = res
		}
	}
	return out
}

func sortStringSlice(s []string) { sort.Strings(s) }
