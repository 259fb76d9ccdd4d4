namespace OrleansPush.Grains.History;

/// <summary>
/// Work to do once, before first use (creating a schema): callers share the attempt in flight, and an attempt that
/// failed is not kept, so the next caller tries again (a database that was down at the first use does not break the
/// store until the process restarts, as a cached <see cref="Lazy{T}"/> of a failed task would).
/// </summary>
public sealed class OnceSucceeded(Func<Task> work)
{
    private readonly Lock _lock = new();
    private Task? _attempt;

    /// <summary>Completes when the work has succeeded once; faults with this attempt's error otherwise.</summary>
    public Task EnsureAsync()
    {
        lock (_lock)
        {
            if (_attempt is null || _attempt.IsFaulted || _attempt.IsCanceled)
            {
                _attempt = work();
            }

            return _attempt;
        }
    }
}
