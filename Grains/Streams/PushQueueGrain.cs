using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Orleans.Placement;
using Orleans.Providers;
using OrleansPush.Hosting;

namespace OrleansPush.Grains.Streams;

/// <summary>
/// The push stream's queue (contract: <see cref="IPushQueueGrain"/>, wired by <see cref="PushStreams"/>).
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
