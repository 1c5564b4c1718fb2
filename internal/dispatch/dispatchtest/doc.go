// Package dispatchtest is for tests only. Run is the conformance suite
// every dispatch driver passes: the local pool and the SSM driver are held
// to one contract. Recorder is a dispatcher for the tests of its callers.
package dispatchtest
