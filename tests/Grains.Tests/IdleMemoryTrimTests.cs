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
        Reset();
        Assert.False(trim.Check(GC.GetTotalAllocatedBytes(), Committed())); // the baseline

        // A burst that is alive at its peak, then garbage: the GC keeps what it committed for it.
        var held = Allocate(Burst);
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

    [Fact]
    public void ATrimThatCameWhileMuchWasStillAliveIsFollowedByAnotherOnceThatIsGarbageToo()
    {
        // As in the churn benchmark: the publishing stopped (quiet), but grains and history of the last minute were still
        // alive at the first trim; they expired after it, and no collection runs in a process at rest.
        var trim = new IdleMemoryTrim(NullLogger<IdleMemoryTrim>.Instance);
        Reset();
        Assert.False(trim.Check(GC.GetTotalAllocatedBytes(), Committed())); // the floor

        var burst = Allocate(Burst);
        var lingering = Allocate(Burst);
        Full();
        burst.Clear();
        Full();
        var committed = Committed();
        Assert.False(trim.Check(GC.GetTotalAllocatedBytes(), committed)); // busy
        Assert.True(trim.Check(GC.GetTotalAllocatedBytes(), committed), "quiet and grown: trims");
        var afterFirst = Committed();
        Assert.True(afterFirst > Burst * 3 / 4, $"what was still alive stays committed: {afterFirst:N0} bytes");

        lingering.Clear();
        Assert.True(trim.Check(GC.GetTotalAllocatedBytes(), Committed()), "what the first trim found alive is garbage now: trims again");
        var afterSecond = Committed();
        Assert.True(afterSecond < afterFirst - Burst / 2, $"committed {afterFirst:N0} bytes after the first trim and {afterSecond:N0} after the second");
        Assert.False(trim.Check(GC.GetTotalAllocatedBytes(), Committed()));
        Assert.Equal(2, trim.Trims);
    }

    [Fact]
    public void AProcessWhoseMemoryIsAliveIsTrimmedOnceNotEveryLook()
    {
        var trim = new IdleMemoryTrim(NullLogger<IdleMemoryTrim>.Instance);
        Reset();
        Assert.False(trim.Check(GC.GetTotalAllocatedBytes(), Committed()));
        var alive = Allocate(Burst); // connections held all day: a working set, not a burst
        Full();
        Assert.False(trim.Check(GC.GetTotalAllocatedBytes(), Committed())); // busy
        Assert.True(trim.Check(GC.GetTotalAllocatedBytes(), Committed()), "quiet and grown: one trim finds out");
        for (var i = 0; i < 5; i++)
        {
            Assert.False(trim.Check(GC.GetTotalAllocatedBytes(), Committed()));
        }

        Assert.Equal(1, trim.Trims);
        GC.KeepAlive(alive);
    }

    private static List<byte[]> Allocate(long bytes)
    {
        var held = new List<byte[]>();
        for (var i = 0; i < bytes / 4096; i++)
        {
            held.Add(new byte[4000]);
        }

        return held;
    }

    /// <summary>Gives back what an earlier test left committed, so that each starts from the process's floor.</summary>
    private static void Reset() => GC.Collect(GC.MaxGeneration, GCCollectionMode.Aggressive, blocking: true, compacting: true);

    private static void Full() => GC.Collect(GC.MaxGeneration, GCCollectionMode.Forced, blocking: true, compacting: true);

    private static long Committed() => GC.GetGCMemoryInfo().TotalCommittedBytes;
}
