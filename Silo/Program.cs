using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using OrleansPush.Grains;

var builder = Host.CreateApplicationBuilder(args);
builder.UseOrleans(silo => silo.AddOrleansPushSilo(builder.Configuration));
builder.Services.Configure<HostOptions>(o => o.ShutdownTimeout = PushSilo.ShutdownTimeout);

await builder.Build().RunAsync();
