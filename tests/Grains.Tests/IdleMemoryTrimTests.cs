using Microsoft.Extensions.Logging.Abstractions;
using OrleansPush.Hosting;

namespace OrleansPush.Grains.Tests;

/// <summary>Issue 16: a process whose load went away gives the memory its burst left committed back, and a busy or
/// steady one is left alone. Reads the process's own GC figures: runs alone, with the memory tests.</summary>
[Collection(MemoryCollection.Name)]
public sealed class IdleMemoryTrimTests
{
    private const long Burst = 256L << 20;

    [Fact]
    public void AQuietProcessGivesBackWhatABurstLeftCommitted()
    {
        var trim = new IdleMemoryTrim(NullLogger<IdleMemoryTrim>.Instance);
        Full();
        Assert.False(trim.Check(GC.GetTotalAllocatedBytes(), Committed())); // the baseline

        // A burst that is alive at its peak, then garbage: the GC keeps what it committed for it.
        var held = new List<byte[]>();
        for (var i = 0; i < Burst / 4096; i++)
        {
            held.Add(new byte[4000]);
        }

        Full();
        held.Clear();
        Full();
        var committed = Committed();
        Assert.True(committed > Burst / 2, $"the GC kept {committed:N0} bytes committed after the burst");

        // Still busy: allocations since the last look were far beyond quiet.
        Assert.False(trim.Check(GC.GetTotalAllocatedBytes(), committed));
        Assert.True(trim.Check(GC.GetTotalAllocatedBytes(), committed), "quiet since the last look, grown since the baseline: trims");
        var after = Committed();
        Assert.True(after < committed - Burst / 2, $"committed {committed:N0} bytes before the trim and {after:N0} after");

        // Nothing grew since: quiet looks do not collect again.
        Assert.False(trim.Check(GC.GetTotalAllocatedBytes(), Committed()));
        Assert.False(trim.Check(GC.GetTotalAllocatedBytes(), Committed()));
        Assert.Equal(1, trim.Trims);
    }

    private static void Full() => GC.Collect(GC.MaxGeneration, GCCollectionMode.Forced, blocking: true, compacting: true);

    private static long Committed() => GC.GetGCMemoryInfo().TotalCommittedBytes;
}
