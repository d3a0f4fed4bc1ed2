package bus

import (
	"context"
	"errors"
	"time"
)

// Message is one event as it travels: a topic, a partition key and a JSON
// value.
type Message struct {
	Topic string
	Key   []byte
	Value []byte
	Time  time.Time // when it was published
}

// Publisher queues events. Publish never blocks on the network; it
// returns an error only when the event is dropped (bus closed, or every
// queue and the spill full).
type Publisher interface {
	Publish(topic string, key, value []byte) error
}

// Handler processes one message. An error is logged and counted; the
// message is not delivered again (a poison message must not stop a topic).
type Handler func(ctx context.Context, m Message) error

// Subscriber delivers messages.
type Subscriber interface {
	// Subscribe calls h for each message of topic until ctx ends, then
	// returns nil. Subscribers with the same group share the messages
	// (each message goes to one of them); every group sees every message.
	Subscribe(ctx context.Context, topic, group string, h Handler) error
}

// Bus is a Publisher and a Subscriber.
type Bus interface {
	Publisher
	Subscriber
	// Stats returns the producer counters.
	Stats() Stats
}

// Stats counts what happened to published events.
type Stats struct {
	Published     int64 `json:"published"` // accepted by Publish
	Sent          int64 `json:"sent"`      // acknowledged by the broker / delivered
	Spilled       int64 `json:"spilled"`   // written to the spill
	Unspilled     int64 `json:"unspilled"` // sent from the spill
	Dropped       int64 `json:"dropped"`   // lost: queue and spill full, or closed
	Failures      int64 `json:"failures"`  // failed broker writes
	Queued        int64 `json:"queued"`    // in the memory queue now
	Pending       int64 `json:"pending"`   // in the spill now
	Corrupt       int64 `json:"corrupt"`   // unreadable spill records skipped
	HandlerErrors int64 `json:"handler_errors"`
}

// ErrClosed is returned by Publish after Close.
var ErrClosed = errors.New("bus: closed")

// ErrFull is returned by Publish when an event is dropped for lack of room.
var ErrFull = errors.New("bus: queue and spill full, event dropped")
