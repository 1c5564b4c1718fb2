// Package orchestrator decides, and never touches the data: it turns
// object-created events into jobs. For each event it applies the filters,
// derives the job ID, creates the job record with a conditional write, and
// hands the job ID to a Dispatcher. The same code runs in the Lambda and in
// `conveyor up`.
//
// Its Reconciler repairs what events cannot guarantee: input objects whose
// event was lost get a job (an older version of a key, whose event was
// lost, gets a record that is superseded from the start, so every version
// ends in one terminal record), and jobs left unfinished by a crash are
// dispatched again.
package orchestrator
