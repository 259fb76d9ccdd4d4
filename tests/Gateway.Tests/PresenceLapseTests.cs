using Microsoft.Extensions.DependencyInjection;

namespace OrleansPush.Gateway.Tests;

/// <summary>
/// Defect 8 of issue 10: the members of a gateway that died (it stops renewing its lease and never reports them
/// leaving) leave when its lease lapses, and subscribers that asked for presence events hear it.
/// </summary>
public sealed class PresenceLapseTests
{
    private static readonly TimeSpan Lease = TimeSpan.FromSeconds(3);

    [Fact]
    public async Task MembersOfAGatewayWhoseLeaseLapsedLeaveAndWatchersHearIt()
    {
        await using var gateway = await TestGateway.StartEmbeddedAsync(new Dictionary<string, string?>
        {
            ["OrleansPush:Topics:Namespaces:room:Presence"] = "true",
            ["OrleansPush:Routing:Lease"] = Lease.ToString(),
        });
        var topic = "room:" + Guid.NewGuid().ToString("N");
        var watcherId = "watcher" + Guid.NewGuid().ToString("N")[..6];
        var ghostUser = "carol" + Guid.NewGuid().ToString("N")[..6];
        await using var watcher = await WsClient.ConnectAsync(gateway.WebSocketUri("user=" + watcherId));
        Assert.Equal("ok", (await watcher.RequestAsync("sub", new { topic, presence = true })).Op);
        Assert.Equal(("join", watcherId), Event(await watcher.NextAsync()));

        // Another gateway (seen by the topic only through its calls) holds a lease and one of carol's connections; then
        // it dies: no more renewals, no report of carol leaving.
        var grain = gateway.Services.GetRequiredService<IClusterClient>().GetGrain<ITopicGrain>(topic);
        await grain.AddInterestAsync("gateway-that-dies");
        await grain.ReportPresenceAsync("gateway-that-dies", ghostUser, 1);
        Assert.Equal(("join", ghostUser), Event(await watcher.NextAsync()));

        // Carol leaves once that lease has lapsed (a lease, plus the grain's check period and the stream hop).
        var leave = await watcher.NextAsync(Lease + (Lease / 4) + TimeSpan.FromSeconds(10));
        Assert.Equal(("leave", ghostUser), Event(leave));
        Assert.Equal([watcherId], (await grain.GetPresenceAsync()).Users.Select(u => u.UserId));
        Assert.True(await watcher.IsQuietAsync(TimeSpan.FromMilliseconds(500)));
    }

    private static (string? Op, string? User) Event(Frame frame) => (frame.Op, frame.Json.TryGetProperty("user", out var u) ? u.GetString() : null);
}
