using Microsoft.Extensions.DependencyInjection;
using OrleansPush.Gateway.Routing;

namespace OrleansPush.Gateway.Tests;

/// <summary>
/// Defect 5 of issue 10: a change of a user's server-side subscriptions reaches gateways as a stream event, which can be
/// lost; gateways reconcile with the user grain's list at every lease renewal, so a lost unsubscribe (a topic the
/// backend took away, still delivered: a security defect) is repaired.
/// </summary>
public sealed class UserSubscriptionRepairTests
{
    private static readonly TimeSpan Lease = TimeSpan.FromSeconds(6);

    [Fact]
    public async Task AServerSideUnsubscribeWhoseEventWasLostStopsDeliveryAtTheNextLeaseRenewal()
    {
        await using var gateway = await TestGateway.StartEmbeddedAsync(new Dictionary<string, string?>
        {
            ["OrleansPush:Routing:Lease"] = Lease.ToString(),
        });
        var user = "u" + Guid.NewGuid().ToString("N");
        var topic = GatewayFixture.NewTopic("orders");
        using (var subscribe = await gateway.Http.PutAsync($"/api/users/{user}/subscriptions/{topic}", null))
        {
            Assert.True(subscribe.IsSuccessStatusCode);
        }

        await using var client = await WsClient.ConnectAsync(gateway.WebSocketUri("user=" + user));
        Assert.Equal("ok", (await client.RequestAsync("ping")).Op);
        await gateway.PublishAsync(topic, "{\"before\":true}");
        Assert.Equal(topic, (await client.MessagesAsync(1)).Single().Topic);

        // Lose the event: the user grain forgets this gateway's lease (as when it reactivates elsewhere), so the
        // unsubscribe that follows at once is announced to nobody; the gateway learns nothing until it renews.
        var cluster = gateway.Services.GetRequiredService<IClusterClient>();
        await cluster.GetGrain<IUserGrain>(user).DetachAsync(gateway.Services.GetRequiredService<GatewayIdentity>().Id);
        using (var unsubscribe = await gateway.Http.DeleteAsync($"/api/users/{user}/subscriptions/{topic}"))
        {
            Assert.True(unsubscribe.IsSuccessStatusCode);
        }

        // Within a renewal interval (a third of the lease) and some margin, the topic no longer reaches the connection.
        var deadline = DateTime.UtcNow + (Lease / 3) + TimeSpan.FromSeconds(10);
        var stopped = false;
        while (!stopped && DateTime.UtcNow < deadline)
        {
            await gateway.PublishAsync(topic, "{\"after\":true}");
            stopped = await client.IsQuietAsync(TimeSpan.FromSeconds(1));
            while (!stopped && await client.IsQuietAsync(TimeSpan.FromMilliseconds(200)) is false)
            {
                await client.NextAsync();
            }
        }

        Assert.True(stopped, $"the connection still receives {topic} {(Lease / 3) + TimeSpan.FromSeconds(10)} after the backend removed it");
        await gateway.PublishAsync(topic, "{\"later\":true}");
        Assert.True(await client.IsQuietAsync(TimeSpan.FromSeconds(1.5)));

        // The personal channel and the connection itself are untouched.
        using (var direct = await gateway.Http.PostAsync("/api/users/" + user, new StringContent("{\"dm\":1}")))
        {
            Assert.True(direct.IsSuccessStatusCode);
        }

        Assert.Equal("user:" + user, (await client.MessagesAsync(1)).Single().Topic);
    }
}
