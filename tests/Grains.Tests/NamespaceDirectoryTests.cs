using System.Text;

namespace OrleansPush.Grains.Tests;

/// <summary>Issue 16: a namespace's directory (the topics wildcard subscriptions can find) follows the topics that are
/// alive: an entry goes once its topic's position would have expired (<c>HistoryTtl</c> + <c>PositionTtl</c> after it
/// was last heard of), while a topic that keeps publishing stays listed.</summary>
public sealed class NamespaceDirectoryTests
{
    [Fact]
    public async Task ADirectoryForgetsAQuietTopicOnceItsPositionExpiredAndKeepsOneThatIsPublishedTo()
    {
        await using var silo = await StoreSilo.StartAsync(new History.MemoryHistoryStore(TimeProvider.System), new Dictionary<string, string?>
        {
            ["OrleansPush:Topics:Namespaces:dir:Wildcards"] = "true",
            ["OrleansPush:Topics:Namespaces:dir:HistoryTtl"] = "00:00:01",
            ["OrleansPush:Topics:Namespaces:dir:PositionTtl"] = "00:00:01",
        });
        var run = Guid.NewGuid().ToString("N");
        var quiet = silo.Grains.GetGrain<ITopicGrain>($"dir:quiet-{run}");
        var busy = silo.Grains.GetGrain<ITopicGrain>($"dir:busy-{run}");
        await quiet.PublishAsync(Encoding.UTF8.GetBytes("{\"n\":1}"), null);
        await busy.PublishAsync(Encoding.UTF8.GetBytes("{\"n\":1}"), null);
        var directory = silo.Grains.GetGrain<INamespaceGrain>("dir");
        Assert.Equal([$"dir:busy-{run}", $"dir:quiet-{run}"], (await directory.WatchAsync("gw-test")).Order(StringComparer.Ordinal));

        // The quiet topic's position expires 2 s after its publish; the busy one is published to every 200 ms meanwhile.
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(20);
        string[] listed;
        var n = 1;
        while ((listed = await directory.WatchAsync("gw-test")).Contains($"dir:quiet-{run}"))
        {
            Assert.True(DateTime.UtcNow < deadline, "the quiet topic was still in its namespace's directory 20 s after its position expired");
            await busy.PublishAsync(Encoding.UTF8.GetBytes($"{{\"n\":{++n}}}"), null);
            await Task.Delay(200);
        }

        Assert.Equal([$"dir:busy-{run}"], listed);
    }
}
