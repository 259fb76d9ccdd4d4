using OrleansPush.Grains.History;

namespace OrleansPush.Grains.Tests;

/// <summary>
/// Fault injection around a real history store. Each fault is armed for a number of appends and fires on the next
/// ones: <see cref="ApplyThenThrow"/> lets the real append happen and then throws (the ambiguous failure: the write
/// committed, the caller saw an error), <see cref="ThrowWithoutApplying"/> throws before the store is touched.
/// </summary>
public sealed class FaultyHistoryStore(IHistoryStore inner) : IHistoryStore
{
    private int _applyThenThrow;
    private int _throwWithoutApplying;
    private int _appends;
    private TaskCompletionSource? _landLate;
    private volatile bool _failing;

    public IHistoryStore Inner { get; } = inner;

    /// <summary>Appends that reached this store (whatever became of them).</summary>
    public int Appends => Volatile.Read(ref _appends);

    public void ApplyThenThrow(int count = 1) => Interlocked.Exchange(ref _applyThenThrow, count);

    public void ThrowWithoutApplying(int count = 1) => Interlocked.Exchange(ref _throwWithoutApplying, count);

    /// <summary>While on, every append throws before the store is touched (the store is down).</summary>
    public void FailAppends(bool on) => _failing = on;

    /// <summary>The next append throws at once, and is applied for real only when <paramref name="release"/> completes
    /// (a write that lands after its caller gave up on it). <see cref="LateAppend"/> tells how that went.</summary>
    public void LandLate(TaskCompletionSource release) => _landLate = release;

    /// <summary>The late append's own outcome: completed when it was applied, faulted (e.g. with a
    /// <see cref="HistoryConflictException"/>) when the store refused it.</summary>
    public Task LateAppend { get; private set; } = Task.CompletedTask;

    public Task<StoredHistory?> LoadAsync(string topic, HistoryBounds bounds, CancellationToken cancellationToken = default) =>
        Inner.LoadAsync(topic, bounds, cancellationToken);

    public Task<TopicPosition?> FindKeyAsync(string topic, string key, CancellationToken cancellationToken = default) =>
        Inner.FindKeyAsync(topic, key, cancellationToken);

    public Task ClearLatestAsync(string topic, string epoch, long head, CancellationToken cancellationToken = default) =>
        Inner.ClearLatestAsync(topic, epoch, head, cancellationToken);

    public async Task AppendAsync(string topic, string epoch, IReadOnlyList<TopicMessage> messages, IReadOnlyList<IdempotencyKey> keys, HistoryBounds bounds,
        LatestChange latest, CancellationToken cancellationToken = default)
    {
        Interlocked.Increment(ref _appends);
        if (Interlocked.Exchange(ref _landLate, null) is { } release)
        {
            LateAppend = LandAsync(release.Task, topic, epoch, [.. messages], [.. keys], bounds, latest);
            throw new TimeoutException("Injected: the store did not answer (the append is still on its way).");
        }

        if (_failing || Take(ref _throwWithoutApplying))
        {
            throw new TimeoutException("Injected: the store did not answer (nothing was written).");
        }

        await Inner.AppendAsync(topic, epoch, messages, keys, bounds, latest, cancellationToken);
        if (Take(ref _applyThenThrow))
        {
            throw new TimeoutException("Injected: the store did not answer (the append was written).");
        }
    }

    private async Task LandAsync(Task release, string topic, string epoch, TopicMessage[] messages, IdempotencyKey[] keys, HistoryBounds bounds, LatestChange latest)
    {
        await release;
        await Inner.AppendAsync(topic, epoch, messages, keys, bounds, latest);
    }

    private static bool Take(ref int armed)
    {
        while (true)
        {
            var left = Volatile.Read(ref armed);
            if (left <= 0)
            {
                return false;
            }

            if (Interlocked.CompareExchange(ref armed, left - 1, left) == left)
            {
                return true;
            }
        }
    }
}
