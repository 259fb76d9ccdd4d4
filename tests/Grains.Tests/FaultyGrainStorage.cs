using Orleans.Storage;

namespace OrleansPush.Grains.Tests;

/// <summary>Fault injection around the real grain storage: the next writes fail before reaching it.</summary>
public sealed class FaultyGrainStorage(IGrainStorage inner) : IGrainStorage
{
    private int _failWrites;

    public void FailWrites(int count) => Interlocked.Exchange(ref _failWrites, count);

    public Task ReadStateAsync<T>(string stateName, GrainId grainId, IGrainState<T> grainState) => inner.ReadStateAsync(stateName, grainId, grainState);

    public Task WriteStateAsync<T>(string stateName, GrainId grainId, IGrainState<T> grainState) =>
        Interlocked.Decrement(ref _failWrites) >= 0
            ? throw new TimeoutException("Injected: the grain storage did not answer (nothing was written).")
            : inner.WriteStateAsync(stateName, grainId, grainState);

    public Task ClearStateAsync<T>(string stateName, GrainId grainId, IGrainState<T> grainState) => inner.ClearStateAsync(stateName, grainId, grainState);
}
