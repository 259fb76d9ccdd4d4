using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Orleans.Concurrency;
using Orleans.Placement;
using Orleans.Providers;

namespace OrleansPush.Grains.Streams;

/// <summary>
/// One partition of the push stream: the events its producers enqueued and its pulling agent has not read yet. The
/// contract is the memory stream's (<see cref="MemoryStreamQueueGrain"/>): at most once, in enqueue order, at most
/// <see cref="PushQueueGrain.Capacity"/> batches held, lost when the silo holding the queue dies (gateways repair gaps from history).
/// What differs is reading: a read of an empty queue waits until an event arrives, or until its bounded wait is over,
/// instead of answering empty at once to a reader that polls.
/// </summary>
[Alias("OrleansPush.IPushQueueGrain")]
public interface IPushQueueGrain : IGrainWithGuidKey
{
    /// <summary>Appends one event batch. Throws when the queue already holds <see cref="PushQueueGrain.Capacity"/>
    /// batches (its reader is gone or far behind): the producer counts the write as failed.</summary>
    [Alias("Enqueue")]
    Task Enqueue(MemoryMessageData data);

    /// <summary>Takes up to <paramref name="maxCount"/> batches in enqueue order. An empty queue answers when a batch
    /// arrives, after <paramref name="wait"/> (empty), or when the call is cancelled (empty); interleaved with
    /// enqueues, so a waiting read never holds a producer up.</summary>
    [AlwaysInterleave, Alias("Dequeue")]
    Task<List<MemoryMessageData>> Dequeue(int maxCount, TimeSpan wait, CancellationToken cancellationToken = default);
}

/// <summary>
/// Placed on the silo that first calls it, which is the silo whose pulling agent reads it (the agent's first read
/// comes before any producer knows the queue in the usual order), so a read costs no network hop.
/// </summary>
[PreferLocalPlacement]
public sealed class PushQueueGrain : Grain, IPushQueueGrain
{
    /// <summary>The memory stream queue's bound, kept so the two lose events in the same situations.</summary>
    public const int Capacity = 16384;

    private readonly Queue<MemoryMessageData> _queue = new();
    private long _sequence = DateTime.UtcNow.Ticks;

    // Completed (and cleared) by the next enqueue; every read waiting on an empty queue waits on this one task.
    private TaskCompletionSource? _arrived;

    // Set when the host begins to stop: from then on reads answer at once, so the pulling agents, which cancel the
    // reads still pending when they stop, find none waiting (a cancelled read is logged by Orleans as an error).
    private bool _stopping;
    private CancellationTokenRegistration _onStopping;

    public override Task OnActivateAsync(CancellationToken cancellationToken)
    {
        if (ServiceProvider.GetService<IHostApplicationLifetime>() is { } lifetime)
        {
            var scheduler = TaskScheduler.Current;
            _onStopping = lifetime.ApplicationStopping.Register(() => _ = Task.Factory.StartNew(
                Stop, CancellationToken.None, TaskCreationOptions.None, scheduler));
        }

        return Task.CompletedTask;
    }

    public override Task OnDeactivateAsync(DeactivationReason reason, CancellationToken cancellationToken)
    {
        _onStopping.Dispose();
        return Task.CompletedTask;
    }

    private void Stop()
    {
        _stopping = true;
        if (_arrived is { } arrived)
        {
            _arrived = null;
            arrived.SetResult();
        }
    }

    public Task Enqueue(MemoryMessageData data)
    {
        if (_queue.Count >= Capacity)
        {
            throw new InvalidOperationException($"Push stream queue {this.GetPrimaryKey()} holds {Capacity} batches; its reader is not keeping up.");
        }

        data.SequenceNumber = _sequence++;
        data.EnqueueTimeUtc = DateTime.UtcNow;
        _queue.Enqueue(data);
        if (_arrived is { } arrived)
        {
            _arrived = null;
            arrived.SetResult();
        }

        return Task.CompletedTask;
    }

    public async Task<List<MemoryMessageData>> Dequeue(int maxCount, TimeSpan wait, CancellationToken cancellationToken = default)
    {
        if (_queue.Count == 0 && wait > TimeSpan.Zero && !_stopping)
        {
            var arrived = _arrived ??= new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);

            // A read that times out is the idle case, so it must not cost a thrown exception; it answers what is there
            // (nothing, or what came as it timed out).
            await arrived.Task.WaitAsync(wait, cancellationToken)
                .ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing | ConfigureAwaitOptions.ContinueOnCapturedContext);
            if (cancellationToken.IsCancellationRequested)
            {
                return [];
            }
        }

        var count = maxCount < 0 ? _queue.Count : Math.Min(maxCount, _queue.Count);
        var batches = new List<MemoryMessageData>(count);
        var now = DateTime.UtcNow;
        for (var i = 0; i < count; i++)
        {
            var data = _queue.Dequeue();
            data.DequeueTimeUtc = now;
            batches.Add(data);
        }

        return batches;
    }
}
