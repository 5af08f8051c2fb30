package main

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"time"

	aj "github.com/choria-io/asyncjobs"
)

// newQueue creates a queue with asyncjobs' createQueue (stream + WORKERS consumer) and prints the settings
// asyncjobs read back from the server.
func newQueue(args []string) error {
	f := newFlags("new-queue")
	name := f.String("queue", "", "queue name")
	tries := f.Int("tries", 0, "Queue.MaxTries (0: asyncjobs' default, unlimited)")
	runTime := f.Duration("run-time", 0, "Queue.MaxRunTime (0: asyncjobs' default, 1h)")
	concurrent := f.Int("concurrent", 0, "Queue.MaxConcurrent (0: asyncjobs' default, 100)")
	f.Parse(args)

	q := &aj.Queue{Name: *name, MaxTries: *tries, MaxRunTime: *runTime, MaxConcurrent: *concurrent}
	_, nc, err := f.client(aj.WorkQueue(q))
	if err != nil {
		return err
	}
	defer nc.Close()
	emit(q)
	return nil
}

// queueInfo joins an existing queue (asyncjobs' BindWorkQueue path) and prints the settings asyncjobs derives
// from its stream and consumer: MaxTries from MaxDeliver, MaxRunTime from AckWait, and so on.
func queueInfo(args []string) error {
	f := newFlags("queue-info")
	name := f.String("queue", "", "queue name")
	f.Parse(args)

	q := &aj.Queue{Name: *name, NoCreate: true}
	_, nc, err := f.client(aj.WorkQueue(q))
	if err != nil {
		return err
	}
	defer nc.Close()
	emit(q)
	return nil
}

func enqueue(args []string) error {
	f := newFlags("enqueue")
	queue := f.String("queue", "DEFAULT", "queue name")
	taskType := f.String("type", "", "task type")
	payload := f.String("payload", "", "payload as JSON (none: a nil payload)")
	tries := f.Int("tries", -1, "max tries (-1: asyncjobs' default)")
	deadline := f.Duration("deadline", 0, "deadline from now (0: none)")
	zone := f.Int("deadline-zone", 0, "with --deadline: express it in a zone this many minutes east of UTC")
	seed := f.String("sign", "", "sign with this hex ed25519 seed")
	depends := f.String("depends", "", "ids of tasks this one depends on (comma separated)")
	load := f.Bool("load", false, "with --depends: load the parents' results into dependency_results")
	f.Parse(args)

	var opts []aj.TaskOpt
	if *tries >= 0 {
		opts = append(opts, aj.TaskMaxTries(*tries))
	}
	if *deadline > 0 {
		at := time.Now().UTC().Add(*deadline)
		if *zone != 0 {
			at = at.In(time.FixedZone("ajcompat", *zone*60))
		}
		opts = append(opts, aj.TaskDeadline(at))
	}
	if *depends != "" {
		opts = append(opts, aj.TaskDependsOnIDs(strings.Split(*depends, ",")...))
		if *load {
			opts = append(opts, aj.TaskRequiresDependencyResults())
		}
	}
	var body any
	if *payload != "" {
		if !json.Valid([]byte(*payload)) {
			return errors.New("--payload must be JSON")
		}
		body = json.RawMessage(*payload)
	}
	task, err := aj.NewTask(*taskType, body, opts...)
	if err != nil {
		return err
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if *seed != "" {
		if err := enqueueSigned(ctx, f, *queue, task, *seed); err != nil {
			return err
		}
	} else {
		client, nc, err := f.client(aj.BindWorkQueue(*queue))
		if err != nil {
			return err
		}
		defer nc.Close()
		if err := client.EnqueueTask(ctx, task); err != nil {
			return err
		}
	}
	emit(map[string]string{"id": task.ID})
	return nil
}

// loader is an asyncjobs client that can load tasks without creating (or needing) a queue.
func (f flags) loader(opts ...aj.ClientOpt) (*aj.Client, func(), error) {
	client, nc, err := f.client(append([]aj.ClientOpt{aj.NoStorageInit()}, opts...)...)
	if err != nil {
		return nil, nil, err
	}
	if err := client.StorageAdmin().PrepareTasks(false, 1, 0); err != nil {
		nc.Close()
		return nil, nil, err
	}
	return client, nc.Close, nil
}

func get(args []string) error {
	f := newFlags("get")
	f.Parse(args)
	if f.NArg() != 1 {
		return errors.New("usage: get ID")
	}
	client, done, err := f.loader()
	if err != nil {
		return err
	}
	defer done()
	task, err := client.LoadTaskByID(f.Arg(0))
	if err != nil {
		return err
	}
	emit(task)
	return nil
}

func retry(args []string) error {
	f := newFlags("retry")
	queue := f.String("queue", "DEFAULT", "queue to put the task on")
	f.Parse(args)
	if f.NArg() != 1 {
		return errors.New("usage: retry --queue Q ID")
	}
	client, nc, err := f.client(aj.BindWorkQueue(*queue))
	if err != nil {
		return err
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := client.RetryTaskByID(ctx, f.Arg(0)); err != nil {
		return err
	}
	task, err := client.LoadTaskByID(f.Arg(0))
	if err != nil {
		return err
	}
	emit(task)
	return nil
}
