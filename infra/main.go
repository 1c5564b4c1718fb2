// Command infra is Conveyor's AWS CDK app: one stack with the buckets, the
// orchestrator Lambda, the EC2 worker and its data volume, the snapshot
// policy and the SSM document. `cdk synth` (or `go run .`) writes cdk.out;
// see README.md for deploying it.
package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/aws/jsii-runtime-go"
)

func main() {
	props := StackProps{}.WithDefaults()
	if err := checkInputs(props); err != nil {
		fmt.Fprintln(os.Stderr, "conveyor infra:", err)
		os.Exit(1)
	}
	defer jsii.Close()
	app := newApp("")
	NewConveyorStack(app, "Conveyor", props)
	app.Synth(synthOptions)
}

// checkInputs reports a missing build output before CDK does, with the
// command that builds it.
func checkInputs(p StackProps) error {
	for _, f := range []string{filepath.Join(p.LambdaAssetDir, "bootstrap"), p.WorkerBinary} {
		if _, err := os.Stat(f); err != nil {
			return fmt.Errorf("%s is missing: build it with `make -C .. build-arm64 build-lambda` (or `make synth`)", f)
		}
	}
	if _, err := readSSMDocument(p.SSMDocumentPath); err != nil {
		return err
	}
	return nil
}
