using System.Diagnostics;
using System.Text;
using OrleansPush.Grains.History;

namespace OrleansPush.Grains.Tests;

/// <summary>Idempotency keys as a publisher sees them: within the dedupe window a key publishes at most once.</summary>
public sealed class IdempotencyTests
{
    private static readonly TimeSpan Window = TimeSpan.FromSeconds(4);

    /// <summary>Defect 10 of issue 10: a first attempt that failed left a stale entry in the window's expiry order, which
    /// expired the retry's key early, so a third attempt within the retry's window published a second time.</summary>
    [Fact]
    public async Task AKeyRetriedAfterAFailedAttemptIsRememberedForTheRetrysWholeWindow()
    {
        await using var silo = await StoreSilo.StartAsync(new MemoryHistoryStore(TimeProvider.System), new Dictionary<string, string?>
        {
            ["OrleansPush:Topics:DedupeWindow"] = Window.ToString(),
        });
        var grain = silo.Grains.GetGrain<ITopicGrain>("idem-" + Guid.NewGuid().ToString("N"));
        var payload = Encoding.UTF8.GetBytes("{\"pay\":10}");
        var clock = Stopwatch.StartNew();

        silo.Store.FailAppends(true);
        await Assert.ThrowsAsync<PushRejectedException>(() => grain.PublishAsync(payload, "pay-10").WaitAsync(TimeSpan.FromSeconds(30)));
        var failedBy = clock.Elapsed;
        silo.Store.FailAppends(false);

        await Task.Delay(TimeSpan.FromSeconds(2));
        var retriedFrom = clock.Elapsed;
        var retried = await grain.PublishAsync(payload, "pay-10").WaitAsync(TimeSpan.FromSeconds(30));

        // Past the failed attempt's window, inside the retry's.
        var third = failedBy + Window + TimeSpan.FromSeconds(0.3);
        await Task.Delay(third - clock.Elapsed);
        Assert.True(clock.Elapsed < retriedFrom + Window - TimeSpan.FromSeconds(0.3), "the machine was too slow to place the third attempt inside the retry's window");
        var again = await grain.PublishAsync(payload, "pay-10").WaitAsync(TimeSpan.FromSeconds(30));

        Assert.Equal(retried, again);
        Assert.Equal(retried, await grain.GetPositionAsync());
    }
}
