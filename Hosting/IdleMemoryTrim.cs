using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace OrleansPush.Hosting;

/// <summary>
/// Gives memory freed after a burst back to the operating system once the process is quiet. The server GC keeps what it
/// committed at the peak: a node whose topics, users and connections came and went keeps its peak RSS, although the
/// live heap is back where it started, because an idle process does not collect and a collection decommits only
/// gradually. Measured in the churn benchmark (issue 16): live heap 36 → 62 MB after everything expired, RSS
/// 185 → 593 MiB. So, every <see cref="CheckPeriod"/>: when the GC holds at least <see cref="MinGrowth"/> (or half) more
/// committed memory than its floor (the least it held since start, or the working set a trim found to be alive), and the
/// process allocated less since the last check than a quarter of that growth (or <see cref="QuietAllocation"/>): the
/// load that grew it is gone, one aggressive full collection (<see cref="GCCollectionMode.Aggressive"/>: compacting,
/// decommitting what is free) gives it back. A busy process is never trimmed. A trim that frees little found a working
/// set that is alive: it becomes the floor, so a steady process is trimmed once, not every check. A trim that frees much
/// may still have come early (quiet, but with a burst's grains and history not yet expired): the floor stays, and the
/// next quiet check trims again once that is garbage too (the churn benchmark ended at 332 MiB committed for a 73 MiB
/// heap when the floor followed the first trim).
/// </summary>
public sealed class IdleMemoryTrim : BackgroundService
{
    /// <summary>How often the process is looked at.</summary>
    public static readonly TimeSpan CheckPeriod = TimeSpan.FromSeconds(30);

    /// <summary>Fewer bytes allocated within a check period than this is always quiet (about half a MiB a second); an
    /// idle node allocates some (stream polling, timers, metrics scrapes), so a quarter of the growth is, too.</summary>
    public const long QuietAllocation = 16L << 20;

    /// <summary>Committed memory grown by at least this much (or by half, whichever is more) above the floor is worth a
    /// trim; a trim that frees less than half of it found a live working set.</summary>
    public const long MinGrowth = 64L << 20;

    private readonly ILogger<IdleMemoryTrim> _logger;
    private readonly TimeProvider _time;
    private long _floor = -1;
    private long _allocated = -1;

    public IdleMemoryTrim(ILogger<IdleMemoryTrim> logger, TimeProvider? time = null)
    {
        _logger = logger;
        _time = time ?? TimeProvider.System;
    }

    /// <summary>Collections this trim ran (for tests and logs).</summary>
    public int Trims { get; private set; }

    // The GC is the process's: one trim looks at it, whichever host (the embedded gateway has two) started first.
    private static int _processOwner;

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        if (Interlocked.CompareExchange(ref _processOwner, 1, 0) != 0)
        {
            return;
        }

        using var timer = new PeriodicTimer(CheckPeriod, _time);
        try
        {
            while (await timer.WaitForNextTickAsync(stoppingToken))
            {
                Check(GC.GetTotalAllocatedBytes(), GC.GetGCMemoryInfo().TotalCommittedBytes);
            }
        }
        catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
        {
        }
        finally
        {
            Volatile.Write(ref _processOwner, 0);
        }
    }

    /// <summary>One look: trims when quiet and grown (see the class remarks). Returns whether it trimmed.</summary>
    public bool Check(long totalAllocated, long committed)
    {
        var allocated = _allocated < 0 ? long.MaxValue : totalAllocated - _allocated;
        _allocated = totalAllocated;
        if (_floor < 0 || committed < _floor)
        {
            _floor = committed;
            return false;
        }

        var growth = committed - _floor;
        if (growth < Math.Max(MinGrowth, _floor / 2) || allocated >= Math.Max(QuietAllocation, growth / 4))
        {
            return false;
        }

        GC.Collect(GC.MaxGeneration, GCCollectionMode.Aggressive, blocking: true, compacting: true);
        var native = TrimNativeHeap();
        var after = GC.GetGCMemoryInfo().TotalCommittedBytes;
        HostingLog.MemoryTrimmed(_logger, committed >> 20, after >> 20, native);
        // Freed little: what is left is alive, the new floor. Freed much: the floor stays, a later look may trim again.
        _floor = committed - after < MinGrowth / 2 ? after : Math.Min(_floor, after);
        _allocated = GC.GetTotalAllocatedBytes();
        Trims++;
        return true;
    }

    private static bool _nativeTrimMissing;

    /// <summary>The native heap too (glibc keeps freed blocks of its per-thread arenas; the runtime's and sockets'
    /// allocations grow there under load): <c>malloc_trim</c> gives free pages back. Not on other C libraries (musl has
    /// none): skipped from then on.</summary>
    private static bool TrimNativeHeap()
    {
        if (_nativeTrimMissing || !OperatingSystem.IsLinux())
        {
            return false;
        }

        try
        {
            return MallocTrim(0) == 1; // 1: some memory was released
        }
        catch (Exception ex) when (ex is EntryPointNotFoundException or DllNotFoundException)
        {
            _nativeTrimMissing = true;
            return false;
        }
    }

    [System.Runtime.InteropServices.DllImport("libc", EntryPoint = "malloc_trim")]
    private static extern int MallocTrim(nuint pad);
}

public static class IdleMemoryTrimHosting
{
    /// <summary>Registers <see cref="IdleMemoryTrim"/> (once per container; of several hosts in one process, one looks).</summary>
    public static IServiceCollection AddIdleMemoryTrim(this IServiceCollection services)
    {
        services.TryAddEnumerable(ServiceDescriptor.Singleton<IHostedService, IdleMemoryTrim>());
        return services;
    }
}

internal static partial class HostingLog
{
    [LoggerMessage(EventId = 1231, Level = LogLevel.Information, Message = "Quiet after a burst: gave freed memory back ({Before} MiB committed by the GC, {After} MiB after an aggressive collection; native heap trimmed: {Native})")]
    public static partial void MemoryTrimmed(ILogger logger, long before, long after, bool native);
}
