// Command conveyor-lambda is the bootstrap of both of the stack's Lambda
// functions (provided.al2023, arm64, built with -tags lambda.norpc), told
// apart by CONVEYOR_LAMBDA_ROLE: the orchestrator (S3 object-created events
// in, job records and SSM commands out) and the reconciler (one bounded
// reconciliation per scheduled event). See internal/lambda.
package main

import (
	"context"
	"fmt"
	"os"

	awslambda "github.com/aws/aws-lambda-go/lambda"

	"github.com/conveyorhq/conveyor/internal/lambda"
	"github.com/conveyorhq/conveyor/internal/version"
)

func main() {
	// Clients and configuration are built once per cold start; a bad
	// configuration fails the init with one line naming the variable.
	h, err := lambda.NewFromEnv(context.Background(), os.Getenv, os.Stdout)
	if err != nil {
		fmt.Fprintf(os.Stderr, "conveyor-lambda: %v\n", err)
		os.Exit(1)
	}
	fmt.Fprintf(os.Stdout, "{\"msg\":\"conveyor-lambda ready\",\"role\":%q,\"version\":%q}\n", h.Role, version.Version)
	awslambda.Start(h.Handle)
}
