package mtalab

import (
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// Client is an SMTP session with a test's Postfix: several messages may
// go over it, each answered with the queue id Postfix assigned.
type Client struct {
	*smtp.Client // for step-by-step sessions (Mail, Rcpt, Data)
}

// Dial opens an SMTP session and says EHLO client.example. It is closed
// when the test ends, if the test has not closed it.
func Dial(t testing.TB, addr string) *Client {
	t.Helper()
	c, err := smtp.Dial(addr)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	c.CommandTimeout = 30 * time.Second
	c.SubmissionTimeout = 60 * time.Second
	if err := c.Hello("client.example"); err != nil {
		c.Close()
		t.Fatalf("EHLO %s: %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	return &Client{c}
}

// Auth logs in with AUTH PLAIN. go-smtp sends it without TLS; the lab's
// Postfix allows that (smtpd_tls_auth_only = no).
func (c *Client) Auth(user, password string) error {
	return c.Client.Auth(sasl.NewPlainClient("", user, password))
}

var queuedRe = regexp.MustCompile(`queued as ([0-9A-Za-z]+)`)

// Send runs one mail transaction and returns the queue id from
// Postfix's "250 2.0.0 Ok: queued as ID".
func (c *Client) Send(from string, to []string, msg []byte) (string, error) {
	if err := c.Mail(from, nil); err != nil {
		return "", fmt.Errorf("MAIL FROM:<%s>: %w", from, err)
	}
	for _, r := range to {
		if err := c.Rcpt(r, nil); err != nil {
			return "", fmt.Errorf("RCPT TO:<%s>: %w", r, err)
		}
	}
	w, err := c.Data()
	if err != nil {
		return "", fmt.Errorf("DATA: %w", err)
	}
	if _, err := w.Write(msg); err != nil {
		return "", fmt.Errorf("DATA: %w", err)
	}
	resp, err := w.CloseWithResponse()
	if err != nil {
		return "", fmt.Errorf("end of DATA: %w", err)
	}
	return QueueIDOf(resp.StatusText), nil
}

// QueueIDOf reads the queue id from Postfix's answer to the end of DATA.
func QueueIDOf(reply string) string {
	if m := queuedRe.FindStringSubmatch(reply); m != nil {
		return m[1]
	}
	return ""
}

// Quit ends the session politely.
func (c *Client) Quit() error { return c.Client.Quit() }

// SendMail sends one message in a session of its own, logging in first
// when user is not empty, and returns the queue id.
func SendMail(t testing.TB, addr, user, password, from string, to []string, msg []byte) string {
	t.Helper()
	c := Dial(t, addr)
	defer c.Close()
	if user != "" {
		if err := c.Auth(user, password); err != nil {
			t.Fatalf("AUTH %s on %s: %v", user, addr, err)
		}
	}
	id, err := c.Send(from, to, msg)
	if err != nil {
		t.Fatalf("send via %s: %v", addr, err)
	}
	if id == "" {
		t.Fatalf("send via %s: no queue id in the reply", addr)
	}
	c.Quit()
	return id
}

// Msg builds a small RFC 5322 message: header fields in the given order
// ("Name: value" strings) and a plain-text body, with CRLF line ends.
// Date, MIME-Version and Content-Type are added when missing.
func Msg(fields []string, body string) []byte {
	var b strings.Builder
	has := func(name string) bool {
		for _, f := range fields {
			if n, _, ok := strings.Cut(f, ":"); ok && strings.EqualFold(n, name) {
				return true
			}
		}
		return false
	}
	for _, f := range fields {
		b.WriteString(f + "\r\n")
	}
	if !has("Date") {
		b.WriteString("Date: " + time.Now().Format(time.RFC1123Z) + "\r\n")
	}
	if !has("MIME-Version") {
		b.WriteString("MIME-Version: 1.0\r\n")
	}
	if !has("Content-Type") {
		b.WriteString("Content-Type: text/plain; charset=utf-8\r\n")
	}
	b.WriteString("\r\n")
	b.WriteString(strings.ReplaceAll(strings.TrimRight(body, "\n"), "\n", "\r\n") + "\r\n")
	return []byte(b.String())
}
