package worker_test

import (
	"os"
	"testing"

	"github.com/conveyorhq/conveyor/internal/processor"
)

func TestMain(m *testing.M) {
	// External processors with limits re-execute this binary to set them.
	processor.HandleShim()
	os.Exit(m.Run())
}
