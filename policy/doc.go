// Package policy decides, for one message, whether an automatic reply may
// be sent and whether outbound mail must be stamped as machine-generated.
//
// It is the heart of replygate and it is pure: an envelope and a header
// section go in, a Verdict with its reasons comes out. There is no I/O,
// no logging and no clock here; the milter and `replygate check` both
// build an Input with Header.Add (or ReadHeader) and call
// Policy.Classify, so the two cannot disagree. Applying the verdict
// (adding fields, answering the MTA, handing mail to the responder) is
// left to the milter package.
package policy
