using OrleansPush.Gateway.Hosting;

await using var gateway = await GatewayHost.CreateAsync(args);
await gateway.App.RunAsync();
